//! The socket side of a peer connection: one task reads, one writes. They
//! only move bytes; every decision is made by the torrent task, which owns
//! the session core.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lodestone_peer::picker::PeerKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::utp::{UtpSocket, UtpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer per connection: large reads mean few wakeups per block.
const READ_CHUNK: usize = 128 * 1024;
/// Chunks queued for the writer before the torrent holds back.
pub const WRITE_QUEUE: usize = 256;
/// Chunks written with one `writev`: a block is a header and a data chunk,
/// so this sends up to 32 blocks per system call.
const WRITE_BATCH: usize = 64;

/// Read buffers retired by the connections of one torrent, reused once
/// every block sliced out of them is written: fresh 128 KiB buffers would
/// fault their pages in on every read.
#[derive(Debug, Default)]
pub struct ReadBuffers {
    retired: std::sync::Mutex<Vec<BytesMut>>,
}

/// Retired read buffers kept at most (2 MiB).
const MAX_RETIRED_BUFFERS: usize = 16;

impl ReadBuffers {
    /// A buffer with room for a read: a retired one nobody else still
    /// holds a slice of, or a new one.
    fn take(&self) -> BytesMut {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let free = retired.iter_mut().position(|b| b.try_reclaim(READ_CHUNK));
        match free {
            Some(i) => retired.swap_remove(i),
            None => BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Hand back a buffer that has too little room left; it is reused
    /// once the slices still pointing into it are dropped.
    fn retire(&self, buf: BytesMut) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        if retired.len() < MAX_RETIRED_BUFFERS {
            retired.push(buf);
        }
    }
}

/// Write every chunk, as few system calls as possible; empties `batch`.
async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    batch: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    use bytes::Buf;
    let mut start = 0;
    while start < batch.len() {
        let slices: Vec<std::io::IoSlice<'_>> = batch[start..]
            .iter()
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && start < batch.len() {
            let len = batch[start].len();
            if n >= len {
                n -= len;
                start += 1;
            } else {
                batch[start].advance(n);
                n = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}

pub use lodestone_torrent::DialFirst;
pub use lodestone_torrent::PeerSource;

/// A peer connection's bytes: over TCP, or over uTP on the shared UDP
/// socket. Everything above the transport (MSE, the peer protocol) is the
/// same for both.
#[derive(Debug)]
pub enum PeerStream {
    Tcp(TcpStream),
    Utp(UtpStream),
}

impl PeerStream {
    pub fn is_utp(&self) -> bool {
        matches!(self, PeerStream::Utp(_))
    }
}

impl From<TcpStream> for PeerStream {
    fn from(s: TcpStream) -> Self {
        PeerStream::Tcp(s)
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            PeerStream::Utp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, data),
            PeerStream::Utp(s) => std::pin::Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            PeerStream::Utp(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            PeerStream::Utp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What the socket tasks tell the torrent task.
///
/// Kept small (48 bytes): every torrent has an input channel of these,
/// and tokio allocates a channel's slots 32 at a time, so one large
/// variant costs a session of a thousand torrents megabytes. Rare, large
/// messages carry a box.
#[derive(Debug)]
pub enum PeerInput {
    /// A connection is up (either direction, TCP or uTP).
    Connected {
        peer: Box<NewPeer>,
        /// For an incoming one: the torrent it asked for (from its
        /// handshake, or the MSE key it used); what a session routes by.
        info_hash: Option<lodestone_core::InfoHash>,
    },
    ConnectFailed {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// A discovery source (DHT, PEX, ...) found these addresses.
    Discovered {
        addrs: Vec<SocketAddr>,
        source: PeerSource,
    },
    /// A DHT lookup for the torrent finished.
    DhtRound(lodestone_torrent::DhtRound),
    /// A tracker answered or failed.
    TrackerStatus(Box<crate::tracker::TrackerStatus>),
    /// A discovery source's state changed (for the sources table).
    SourceStatus {
        source: PeerSource,
        status: String,
        next_in: Option<std::time::Duration>,
    },
    /// Bytes read; consecutive chunks are split off one allocation so the
    /// session can join them without copying.
    Data {
        key: PeerKey,
        bytes: BytesMut,
    },
    /// The writer drained its queue after the torrent held bytes back.
    Writable {
        key: PeerKey,
    },
    Closed {
        key: PeerKey,
        reason: String,
    },
    /// From the session that holds the torrent, not from a socket.
    Command(crate::torrent::Command),
}

/// A connection that is up, as [`PeerInput::Connected`] brings it.
#[derive(Debug)]
pub struct NewPeer {
    pub stream: PeerStream,
    pub addr: SocketAddr,
    pub source: PeerSource,
    /// Plaintext already read (the MSE initial payload, or the first
    /// bytes of a plain handshake).
    pub initial: Vec<u8>,
    /// RC4 streams when the peer negotiated MSE with RC4.
    pub cipher: Option<Box<Cipher>>,
}

impl PeerInput {
    /// A connection that is up.
    pub fn connected(
        stream: PeerStream,
        addr: SocketAddr,
        source: PeerSource,
        initial: Vec<u8>,
        cipher: Option<Box<Cipher>>,
        info_hash: Option<lodestone_core::InfoHash>,
    ) -> Self {
        PeerInput::Connected {
            peer: Box::new(NewPeer {
                stream,
                addr,
                source,
                initial,
                cipher,
            }),
            info_hash,
        }
    }
}

/// The RC4 streams of an MSE connection: one for each direction.
#[derive(Debug)]
pub struct Cipher {
    pub decrypt: lodestone_wire::mse::Rc4,
    pub encrypt: lodestone_wire::mse::Rc4,
}

/// Handles to one connection's tasks.
pub struct Connection {
    pub tx: mpsc::Sender<Bytes>,
    pub want_writable: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl Connection {
    pub fn spawn(
        key: PeerKey,
        stream: PeerStream,
        input: mpsc::Sender<PeerInput>,
        cipher: Option<Box<Cipher>>,
        buffers: Arc<ReadBuffers>,
    ) -> Self {
        match stream {
            PeerStream::Tcp(s) => {
                let _ = s.set_nodelay(true);
                let (rd, wr) = s.into_split();
                Self::spawn_halves(key, rd, wr, input, cipher, buffers)
            }
            PeerStream::Utp(s) => {
                let (rd, wr) = s.into_split();
                Self::spawn_halves(key, rd, wr, input, cipher, buffers)
            }
        }
    }

    fn spawn_halves<R, W>(
        key: PeerKey,
        mut rd: R,
        mut wr: W,
        input: mpsc::Sender<PeerInput>,
        cipher: Option<Box<Cipher>>,
        buffers: Arc<ReadBuffers>,
    ) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (mut decrypt, mut encrypt) = match cipher.map(|c| *c) {
            Some(c) => (Some(c.decrypt), Some(c.encrypt)),
            None => (None, None),
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let want_writable = Arc::new(AtomicBool::new(false));

        let rinput = input.clone();
        let reader = tokio::spawn(async move {
            let mut buf = buffers.take();
            let reason = loop {
                if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                    buffers.retire(std::mem::replace(&mut buf, buffers.take()));
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break "connection closed by peer".to_owned(),
                    Ok(_) => {
                        let mut chunk = buf.split();
                        if let Some(d) = decrypt.as_mut() {
                            d.apply(&mut chunk);
                        }
                        let bytes = chunk;
                        if rinput.send(PeerInput::Data { key, bytes }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => break format!("read error: {e}"),
                }
            };
            let _ = rinput.send(PeerInput::Closed { key, reason }).await;
        });

        let flag = want_writable.clone();
        let writer = tokio::spawn(async move {
            let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH);
            while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                if let Some(e) = encrypt.as_mut() {
                    for b in batch.iter_mut() {
                        let mut v = b.to_vec();
                        e.apply(&mut v);
                        *b = Bytes::from(v);
                    }
                }
                if let Err(e) = write_all_vectored(&mut wr, &mut batch).await {
                    let reason = format!("write error: {e}");
                    let _ = input.send(PeerInput::Closed { key, reason }).await;
                    return;
                }
                // Ask for more while half the queue is still there to write,
                // so the socket never waits on the torrent task.
                if rx.len() <= WRITE_QUEUE / 2 && flag.swap(false, Ordering::AcqRel) {
                    let _ = input.send(PeerInput::Writable { key }).await;
                }
            }
            let _ = wr.shutdown().await;
        });
        Self {
            tx,
            want_writable,
            reader,
            writer: Some(writer),
        }
    }
}

impl Connection {
    /// Stop reading; the writer sends what it was given, then closes.
    /// Its handle, to wait for that.
    pub fn close(mut self) -> Option<JoinHandle<()>> {
        self.writer.take()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        // The writer ends when `tx` is dropped, after flushing what it has.
    }
}

/// Dial `addr` and report the outcome.
/// Ask for an MSE/PE handshake on an outgoing connection.
#[derive(Debug, Clone)]
pub struct Obfuscate {
    pub info_hash: lodestone_core::InfoHash,
    pub private_key: [u8; 20],
    pub pad: Vec<u8>,
}

/// Open a TCP connection to `addr`, from `local`'s IP when we listen on a
/// specific address of the same family (the peer then sees the address we
/// announce; libtorrent's outgoing_interfaces does the same).
async fn dial(addr: SocketAddr, local: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let from = local.filter(|l| !l.ip().is_unspecified() && l.is_ipv4() == addr.is_ipv4());
    let stream = match from {
        None => TcpStream::connect(addr).await?,
        Some(from) => {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(from.ip(), 0))?;
            socket.connect(addr).await?
        }
    };
    // No Nagle from the first byte: handshakes are small writes that each
    // wait for an answer.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Peers remembered per transport verdict (uTP failed, TCP hung up); a
/// full set is cleared rather than grown.
const MAX_REMEMBERED: usize = 4096;

/// The transports peers are dialled over, shared by a torrent's dials.
#[derive(Debug, Clone)]
pub struct Transports {
    /// The shared UDP socket, when uTP is on.
    pub utp: Option<UtpSocket>,
    /// Dial over TCP at all (`--no-tcp` turns it off).
    pub tcp: bool,
    tcp_only: AddrSet,
    /// Peers whose TCP port hung up on both a plain and an encrypted
    /// handshake: dialled over uTP first.
    utp_first: AddrSet,
}

type AddrSet = Arc<std::sync::Mutex<std::collections::HashSet<SocketAddr>>>;

/// Adds (or removes) `addr`; a full set is cleared rather than grown.
fn remember(set: &AddrSet, addr: SocketAddr, keep: bool) {
    let mut set = set.lock().unwrap_or_else(|p| p.into_inner());
    if !keep {
        set.remove(&addr);
        return;
    }
    if set.len() >= MAX_REMEMBERED {
        set.clear();
    }
    set.insert(addr);
}

impl Default for Transports {
    fn default() -> Self {
        Self::new(None, true)
    }
}

impl Transports {
    pub fn new(utp: Option<UtpSocket>, tcp: bool) -> Self {
        Transports {
            utp,
            tcp,
            tcp_only: Arc::default(),
            utp_first: Arc::default(),
        }
    }

    /// Which transports to try for `addr`, in order. libtorrent presumes
    /// every peer speaks uTP until a uTP connect to it fails, then dials it
    /// over TCP; we do the same for peers out on the internet, where
    /// LEDBAT keeps the user's line usable. For peers on this machine or
    /// the local network there is no uplink to protect and TCP costs less
    /// per byte, so TCP goes first there and uTP is the fallback. The
    /// torrent may know better (`first`): a peer exchange flagged the peer
    /// as speaking uTP, or one transport's connections were closed before
    /// the peer's handshake.
    pub fn order(&self, addr: SocketAddr, first: DialFirst) -> Vec<Transport> {
        let has = |set: &AddrSet| {
            set.lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&addr)
        };
        let utp_first = match first {
            DialFirst::Utp => true,
            DialFirst::Tcp => false,
            DialFirst::Either if has(&self.utp_first) => true,
            DialFirst::Either => !has(&self.tcp_only) && !is_local(addr.ip()),
        };
        let mut order = Vec::with_capacity(2);
        if self.utp.is_some() && utp_first {
            order.push(Transport::Utp);
        }
        if self.tcp {
            order.push(Transport::Tcp);
        }
        if self.utp.is_some() && !utp_first {
            order.push(Transport::Utp);
        }
        order
    }

    fn utp_failed(&self, addr: SocketAddr) {
        remember(&self.utp_first, addr, false);
        if self.tcp {
            remember(&self.tcp_only, addr, true);
        }
    }

    fn tcp_hung_up(&self, addr: SocketAddr) {
        if self.utp.is_some() {
            remember(&self.utp_first, addr, true);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Utp,
}

/// Loopback, private (RFC 1918, unique-local) and link-local addresses.
fn is_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            let seg = v6.segments()[0];
            v6.is_loopback() || (seg & 0xfe00) == 0xfc00 || (seg & 0xffc0) == 0xfe80
        }
    }
}

/// Open a connection to `addr` over each transport in turn until one
/// answers.
async fn dial_any(
    addr: SocketAddr,
    local: Option<SocketAddr>,
    transports: &Transports,
    first: DialFirst,
) -> std::io::Result<PeerStream> {
    let mut last = std::io::Error::other("no transport enabled (both TCP and uTP are off)");
    for t in transports.order(addr, first) {
        let r = match (t, &transports.utp) {
            (Transport::Tcp, _) => {
                match tokio::time::timeout(CONNECT_TIMEOUT, dial(addr, local)).await {
                    Ok(r) => r.map(PeerStream::Tcp),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    )),
                }
            }
            (Transport::Utp, Some(utp)) => {
                let r = utp.connect(addr).await.map(PeerStream::Utp);
                if r.is_err() {
                    transports.utp_failed(addr);
                }
                r
            }
            (Transport::Utp, None) => continue,
        };
        match r {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Dial `addr` (from `local`'s IP, see [`dial`]) over the transports in
/// their order and report the outcome; with `obfuscate`, run the MSE/PE
/// handshake first (offering plain text and RC4).
pub fn connect(
    addr: SocketAddr,
    local: Option<SocketAddr>,
    source: PeerSource,
    input: mpsc::Sender<PeerInput>,
    obfuscate: Option<Obfuscate>,
    transports: Transports,
    first: DialFirst,
) {
    tokio::spawn(async move {
        let failed = |error: std::io::Error| PeerInput::ConnectFailed { addr, error };
        let timed_out = |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
        let msg = match dial_any(addr, local, &transports, first).await {
            Ok(stream) => match obfuscate {
                None => PeerInput::connected(stream, addr, source, Vec::new(), None, None),
                Some(o) => {
                    let over_tcp = !stream.is_utp();
                    match tokio::time::timeout(SNIFF_TIMEOUT, initiate(stream, o)).await {
                        Ok(Ok((stream, initial, cipher))) => {
                            PeerInput::connected(stream, addr, source, initial, cipher, None)
                        }
                        Ok(Err(e)) => {
                            // The torrent dials MSE after a plain handshake was
                            // closed: both closed on TCP means the port takes
                            // TCP connections but not TCP peers (libtorrent with
                            // incoming TCP off does that). uTP first next time.
                            if over_tcp {
                                transports.tcp_hung_up(addr);
                            }
                            failed(std::io::Error::other(format!(
                                "encrypted handshake failed: {e}"
                            )))
                        }
                        Err(_) => failed(timed_out("encrypted handshake timed out")),
                    }
                }
            },
            Err(e) => failed(e),
        };
        let _ = input.send(msg).await;
    });
}

/// The initiating MSE handshake (no initial payload; the BitTorrent
/// handshake follows on the negotiated stream).
async fn initiate(
    mut stream: PeerStream,
    o: Obfuscate,
) -> Result<(PeerStream, Vec<u8>, Option<Box<Cipher>>), String> {
    use lodestone_wire::mse::{MseInitiator, CRYPTO_PLAIN, CRYPTO_RC4};
    let (mut mse, first) = MseInitiator::new(
        o.private_key,
        o.pad,
        o.info_hash,
        Vec::new(),
        CRYPTO_PLAIN | CRYPTO_RC4,
    );
    stream.write_all(&first).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed by peer".into());
        }
        let (out, done) = mse.handle(&buf[..n]).map_err(|e| e.to_string())?;
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
        }
        if let Some(est) = done {
            let cipher = match (est.decrypt, est.encrypt) {
                (Some(decrypt), Some(encrypt)) => Some(Box::new(Cipher { decrypt, encrypt })),
                _ => None,
            };
            return Ok((stream, est.initial, cipher));
        }
    }
}

/// The info hashes a listener answers MSE/PE handshakes for: fixed for one
/// torrent, the session's current set for many.
pub type InfoHashes = Arc<dyn Fn() -> Vec<lodestone_core::InfoHash> + Send + Sync>;

/// The info hash of a plain BitTorrent handshake at the start of `initial`
/// (what [`listen`] passes on, after MSE if there was one).
pub fn handshake_info_hash(initial: &[u8]) -> Option<lodestone_core::InfoHash> {
    let ih = initial
        .get(28..48)
        .filter(|_| initial.first() == Some(&19))?;
    Some(lodestone_core::InfoHash(ih.try_into().ok()?))
}

/// Accept connections for as long as the returned handle lives. A peer
/// that opens with an MSE/PE handshake for one of `info_hashes` is answered
/// (plain text chosen when it offers it); a plain one is passed on as is.
pub fn listen(
    listener: TcpListener,
    input: mpsc::Sender<PeerInput>,
    info_hashes: InfoHashes,
    seed: u64,
) -> JoinHandle<()> {
    accept_loop(Acceptor::Tcp(listener), input, info_hashes, seed)
}

/// [`listen`] for the uTP connections the shared UDP socket accepts.
pub fn listen_utp(
    utp: &UtpSocket,
    input: mpsc::Sender<PeerInput>,
    info_hashes: InfoHashes,
    seed: u64,
) -> JoinHandle<()> {
    accept_loop(
        Acceptor::Utp(utp.incoming()),
        input,
        info_hashes,
        seed ^ 0x7574,
    )
}

enum Acceptor {
    Tcp(TcpListener),
    Utp(mpsc::Receiver<UtpStream>),
}

impl Acceptor {
    async fn accept(&mut self) -> std::io::Result<(PeerStream, SocketAddr)> {
        match self {
            Acceptor::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((PeerStream::Tcp(s), addr))
            }
            Acceptor::Utp(rx) => match rx.recv().await {
                Some(s) => {
                    let addr = s.peer_addr();
                    Ok((PeerStream::Utp(s), addr))
                }
                // The socket is gone: nothing more will come.
                None => std::future::pending().await,
            },
        }
    }
}

fn accept_loop(
    mut listener: Acceptor,
    input: mpsc::Sender<PeerInput>,
    info_hashes: InfoHashes,
    seed: u64,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = lodestone_dht::rng::Rng::from_u64(seed ^ 0x3a5e);
        // Handshakes under way, oldest first, with when each came; a
        // finished one sets its flag.
        let mut pending: VecDeque<(Arc<AtomicBool>, tokio::task::AbortHandle, Instant)> =
            VecDeque::new();
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    pending.retain(|(done, _, _)| !done.load(Ordering::Acquire));
                    // Full: the oldest goes if it has been silent a while. A
                    // real peer sends its handshake at once, so idle
                    // connections are what gets dropped, and a flood of them
                    // cannot keep newcomers out; a burst of fresh ones (many
                    // peers dialling at once) may go past the limit, up to
                    // MAX_PENDING_BURST.
                    if pending.len() >= MAX_PENDING_HANDSHAKES {
                        let stale = pending
                            .front()
                            .is_some_and(|(_, _, at)| at.elapsed() >= SILENT_AFTER);
                        if stale || pending.len() >= MAX_PENDING_BURST {
                            if let Some((_, oldest, _)) = pending.pop_front() {
                                oldest.abort();
                            }
                        }
                    }
                    let key = rng.bytes20();
                    let pad_len = rng.below(64) as usize;
                    let mut pad = vec![0u8; pad_len];
                    rng.fill(&mut pad);
                    let (input, hashes) = (input.clone(), info_hashes());
                    let done = Arc::new(AtomicBool::new(false));
                    let flag = done.clone();
                    let task = tokio::spawn(async move {
                        let msg = sniff(stream, addr, hashes, key, pad).await;
                        flag.store(true, Ordering::Release);
                        if let Some(msg) = msg {
                            let _ = input.send(msg).await;
                        }
                    });
                    pending.push_back((done, task.abort_handle(), Instant::now()));
                    // Let the handshakes already here be read before the
                    // next accept: on one worker thread a burst of peers
                    // would otherwise all be accepted (and the oldest of
                    // them dropped) before any of their bytes were read.
                    tokio::task::yield_now().await;
                }
                // Out of descriptors and the like: back off, don't spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
}

/// How long an incoming peer has to finish its (MSE) handshake.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Incoming connections in their first read or MSE handshake at once; a
/// newcomer beyond it closes the oldest. A flood of idle connections must
/// not hold every file descriptor (the storage needs some) for
/// [`SNIFF_TIMEOUT`] each.
const MAX_PENDING_HANDSHAKES: usize = 128;
/// Past the limit, a newcomer closes the oldest only once it has been
/// silent this long...
const SILENT_AFTER: Duration = Duration::from_secs(1);
/// ...or when this many are under way, however fresh.
const MAX_PENDING_BURST: usize = 1024;

/// Plain BitTorrent or MSE? Run MSE to its end when it is that.
async fn sniff(
    mut stream: PeerStream,
    addr: SocketAddr,
    hashes: Vec<lodestone_core::InfoHash>,
    key: [u8; 20],
    pad: Vec<u8>,
) -> Option<PeerInput> {
    use lodestone_wire::mse::MseResponder;
    let work = async {
        let mut buf = vec![0u8; 4096];
        let mut n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        // An MSE opening is a random public key: its first byte is 19 one
        // time in 256. Only the whole protocol string means plain.
        const PLAIN: &[u8; 20] = b"\x13BitTorrent protocol";
        while n < PLAIN.len() && buf[..n] == PLAIN[..n] {
            match stream.read(&mut buf[n..]).await.ok()? {
                0 => return None,
                m => n += m,
            }
        }
        if buf[..PLAIN.len()] == PLAIN[..] {
            // Up to the info hash at least: a session routes by it.
            while n < 48 {
                match stream.read(&mut buf[n..]).await.ok()? {
                    0 => return None,
                    m => n += m,
                }
            }
            let initial = Vec::from(&buf[..n]);
            return Some((handshake_info_hash(&initial), initial, None));
        }
        let mut mse = MseResponder::new(key, pad, hashes, true);
        let mut data = buf[..n].to_vec();
        loop {
            let (out, done) = mse.handle(&data).ok()?;
            if !out.is_empty() {
                stream.write_all(&out).await.ok()?;
            }
            if let Some(est) = done {
                let cipher = match (est.decrypt, est.encrypt) {
                    (Some(decrypt), Some(encrypt)) => Some(Box::new(Cipher { decrypt, encrypt })),
                    _ => None,
                };
                return Some((Some(est.info_hash), est.initial, cipher));
            }
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            data = buf[..n].to_vec();
        }
    };
    let (info_hash, initial, cipher) = tokio::time::timeout(SNIFF_TIMEOUT, work).await.ok()??;
    Some(PeerInput::connected(
        stream,
        addr,
        PeerSource::Incoming,
        initial,
        cipher,
        info_hash,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Read until EOF or `wait` passes: true when the peer closed.
    async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(wait, s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[test]
    fn an_input_is_small() {
        // Every torrent's input channel allocates 32 of these at once.
        assert!(std::mem::size_of::<PeerInput>() <= 48);
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_pending_limit_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let ih = lodestone_core::InfoHash([7; 20]);
        let _task = listen(listener, tx, Arc::new(move || vec![ih]), 1);
        let mut idle = Vec::new();
        for i in 0..MAX_PENDING_HANDSHAKES + 4 {
            if i == MAX_PENDING_HANDSHAKES {
                // Those so far have been silent long enough to be let go.
                tokio::time::sleep(SILENT_AFTER + Duration::from_millis(100)).await;
            }
            idle.push(TcpStream::connect(addr).await.unwrap());
            // In order: the listener takes each before the next.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The four oldest made room for the last four.
        for s in &mut idle[..4] {
            assert!(closed_within(s, Duration::from_secs(2)).await);
        }
        for s in &mut idle[4..8] {
            assert!(!closed_within(s, Duration::from_millis(100)).await);
        }
        // With the table still full of idle connections, a real peer gets
        // through: it too pushes out the oldest, then answers at once.
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let hs = lodestone_wire::Handshake {
            reserved: lodestone_wire::Reserved::ours(),
            info_hash: ih,
            peer_id: lodestone_core::PeerId([1; 20]),
        };
        peer.write_all(&hs.encode()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the handshake reaches the torrent")
            .expect("channel open");
        assert!(matches!(got, PeerInput::Connected { .. }), "{got:?}");
    }

    /// Many peers dialling at once, each sending its handshake only once
    /// all are connected: none is dropped as idle.
    #[tokio::test]
    async fn a_burst_of_peers_past_the_pending_limit_all_get_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let ih = lodestone_core::InfoHash([9; 20]);
        let _task = listen(listener, tx, Arc::new(move || vec![ih]), 1);
        let n = MAX_PENDING_HANDSHAKES + 72;
        let mut peers = Vec::new();
        for _ in 0..n {
            peers.push(TcpStream::connect(addr).await.unwrap());
        }
        let hs = lodestone_wire::Handshake {
            reserved: lodestone_wire::Reserved::ours(),
            info_hash: ih,
            peer_id: lodestone_core::PeerId([2; 20]),
        }
        .encode();
        for p in &mut peers {
            p.write_all(&hs).await.unwrap();
        }
        let mut got = 0;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while got < n {
                match rx.recv().await {
                    Some(PeerInput::Connected { .. }) => got += 1,
                    Some(_) => {}
                    None => break,
                }
            }
        })
        .await;
        assert_eq!(got, n, "peers dropped before their handshake was read");
    }

    #[tokio::test]
    async fn an_mse_peer_is_named_by_the_info_hash_its_key_was_made_with() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let hashes = [
            lodestone_core::InfoHash([1; 20]),
            lodestone_core::InfoHash([2; 20]),
        ];
        let _task = listen(listener, tx, Arc::new(move || hashes.to_vec()), 1);
        // Our own initiator sends nothing inside MSE: the listener learns
        // the torrent from the key alone.
        let s = TcpStream::connect(addr).await.unwrap();
        let o = Obfuscate {
            info_hash: hashes[1],
            private_key: [9; 20],
            pad: Vec::new(),
        };
        let (_s, initial, _) = initiate(s.into(), o).await.unwrap();
        assert!(initial.is_empty());
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the connection is passed on")
            .expect("channel open");
        let PeerInput::Connected { info_hash, .. } = got else {
            panic!("{got:?}");
        };
        assert_eq!(info_hash, Some(hashes[1]));
    }
}
