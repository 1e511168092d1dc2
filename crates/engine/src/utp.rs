//! The uTP driver: one UDP socket carries uTP and the DHT, as libtorrent's
//! does, so one port (and one NAT mapping) serves both. A task owns the
//! socket and the sans-IO [`Endpoint`]; datagrams that look like KRPC
//! (bencode starts with `d`) go to the DHT node's task, the rest to the
//! endpoint. Streams reach the endpoint through a mutex, as quinn's do,
//! and wake the task when they queue bytes.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use lodestone_utp::{CloseReason, Config, ConnectionId, Endpoint, Event, StreamError};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Notify};

/// Datagrams (not uTP) for the DHT node sharing the socket.
pub type DhtInbox = mpsc::Receiver<(Vec<u8>, SocketAddr)>;

/// Incoming uTP connections waiting for the listener.
const ACCEPT_QUEUE: usize = 64;
/// DHT datagrams queued for its task; beyond, they are dropped (UDP).
const DHT_QUEUE: usize = 256;
/// `recvmmsg` calls per wakeup before the task lets others run.
const RECV_ROUNDS: usize = 8;
/// Buffers per `recvmmsg`.
const RECV_BUFFERS: usize = 16;
/// The most a coalesced (GRO) receive holds.
const GRO_BUFFER: usize = 1 << 16;
/// Datagrams per segmented send (the kernel allows 64), and its bytes.
const MAX_SEGMENTS: usize = 44;
const MAX_BATCH_BYTES: usize = 64_000;
/// The UDP socket's kernel buffers: a fast uTP flow has hundreds of
/// packets in flight, and a full receive buffer drops them.
const SOCKET_BUFFER: usize = 4 << 20;

/// Syscalls against datagrams: how well sends and receives batch.
#[derive(Default)]
struct Counts {
    sends: AtomicU64,
    sent: AtomicU64,
    receives: AtomicU64,
    received: AtomicU64,
}

/// What [`UtpSocket::io_counts`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoCounts {
    /// `sendmsg` calls, and the datagrams they carried.
    pub sends: u64,
    pub datagrams_sent: u64,
    /// `recvmmsg` calls that returned datagrams, and how many.
    pub receives: u64,
    pub datagrams_received: u64,
}

#[derive(Default)]
struct Waiters {
    read: Option<Waker>,
    write: Option<Waker>,
    connect: Option<oneshot::Sender<Result<(), CloseReason>>>,
}

struct State {
    ep: Endpoint,
    waiters: HashMap<ConnectionId, Waiters>,
    incoming: Option<mpsc::Sender<UtpStream>>,
    dht: Option<mpsc::Sender<(Vec<u8>, SocketAddr)>>,
}

struct Shared {
    state: Mutex<State>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    /// Batched sends and receives on `socket`.
    udp: Arc<UdpSocketState>,
    counts: Counts,
    /// Wakes the task: bytes to send, a connect, a close.
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle to the shared socket; clones share it. The task stops when the
/// last handle (and the last stream) is gone.
#[derive(Clone)]
pub struct UtpSocket {
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for UtpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpSocket")
            .field("local", &self.shared.local)
            .finish()
    }
}

impl UtpSocket {
    /// Binds `addr` (UDP). `seed` makes connection ids and sequence
    /// numbers replayable in tests.
    pub async fn bind(addr: SocketAddr, cfg: Config, seed: u64) -> io::Result<Self> {
        let std = std::net::UdpSocket::bind(addr)?;
        let sock = socket2::Socket::from(std);
        // Best effort: the kernel caps these at its own maximum.
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        sock.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(sock.into())?);
        let local = socket.local_addr()?;
        let udp = Arc::new(UdpSocketState::new((&*socket).into())?);
        set_dont_fragment(&socket, local.is_ipv4(), false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ep: Endpoint::new(cfg, seed, Instant::now()),
                waiters: HashMap::new(),
                incoming: None,
                dht: None,
            }),
            socket,
            local,
            udp,
            counts: Counts::default(),
            wake: Notify::new(),
        });
        let task = tokio::spawn(drive(Arc::downgrade(&shared)));
        Ok(UtpSocket {
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    pub fn io_counts(&self) -> IoCounts {
        let c = &self.shared.counts;
        IoCounts {
            sends: c.sends.load(Ordering::Relaxed),
            datagrams_sent: c.sent.load(Ordering::Relaxed),
            receives: c.receives.load(Ordering::Relaxed),
            datagrams_received: c.received.load(Ordering::Relaxed),
        }
    }

    /// The socket, for the DHT node that shares it (it sends with it).
    pub fn udp(&self) -> Arc<UdpSocket> {
        self.shared.socket.clone()
    }

    /// Routes every datagram that is not uTP to the returned inbox from now
    /// on (one DHT node per socket; a second call replaces the first).
    pub fn dht_inbox(&self) -> DhtInbox {
        let (tx, rx) = mpsc::channel(DHT_QUEUE);
        self.shared.lock().dht = Some(tx);
        rx
    }

    /// Accept incoming connections from now on; they arrive on the
    /// returned channel (a full channel turns newcomers away).
    pub fn incoming(&self) -> mpsc::Receiver<UtpStream> {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        self.shared.lock().incoming = Some(tx);
        rx
    }

    /// Connects to `addr`; fails when the peer does not answer within the
    /// endpoint's SYN tries (three, a second apart) or refuses.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<UtpStream> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.shared.lock();
            let id = st
                .ep
                .connect(Instant::now(), addr)
                .map_err(|e| io::Error::other(e.to_string()))?;
            st.waiters.entry(id).or_default().connect = Some(tx);
            id
        };
        // From here the stream owns the connection: dropping it (this
        // future cancelled) closes it.
        let stream = UtpStream::new(self.shared.clone(), id, addr);
        self.shared.wake.notify_one();
        match rx.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(reason)) => Err(close_error(reason)),
            Err(_) => Err(io::Error::other("uTP socket stopped")),
        }
    }
}

/// Don't Fragment goes on an MTU probe's first try only, as libtorrent
/// does: a path too small for the probe drops it (that is the answer the
/// probe asks for), while every other datagram, the probe's resends among
/// them, may be fragmented. uTP resends a packet as it was, never split, so
/// a resend with DF over a path that drops it would stall the connection
/// for good. (quinn-udp sets DF on everything, as QUIC wants: undone here.)
fn set_dont_fragment(socket: &UdpSocket, ipv4: bool, on: bool) {
    use rustix::net::sockopt::{self, Ipv4PathMtuDiscovery as V4, Ipv6PathMtuDiscovery as V6};
    // Best effort: without it probes fragment and the search tops out at
    // its ceiling, which every path of this kind still carries.
    let _ = sockopt::set_ip_mtu_discover(socket, if on { V4::DO } else { V4::DONT });
    if !ipv4 {
        let _ = sockopt::set_ipv6_mtu_discover(socket, if on { V6::DO } else { V6::DONT });
    }
}

fn close_error(reason: CloseReason) -> io::Error {
    match reason {
        CloseReason::Refused => {
            io::Error::new(io::ErrorKind::ConnectionRefused, "uTP connection refused")
        }
        CloseReason::Reset => {
            io::Error::new(io::ErrorKind::ConnectionReset, "uTP connection reset")
        }
        CloseReason::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "uTP peer stopped answering")
        }
        CloseReason::Finished => io::Error::new(io::ErrorKind::BrokenPipe, "uTP connection closed"),
    }
}

async fn drive(weak: std::sync::Weak<Shared>) {
    let Some(shared) = weak.upgrade() else { return };
    let socket = shared.socket.clone();
    let udp = shared.udp.clone();
    drop(shared);
    let mut rx = RecvBufs::new();
    let mut tx = SendBufs::default();
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let deadline = shared.lock().ep.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.readable() => {
                if r.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                receive(&shared, &socket, &udp, &mut rx);
            }
            _ = shared.wake.notified() => {}
            _ = sleep => {
                shared.lock().ep.handle_timeout(Instant::now());
            }
        }
        transmit(&shared, &socket, &udp, &mut tx).await;
        dispatch(&shared);
    }
}

/// Receive buffers: one per datagram of a `recvmmsg`, each big enough for
/// the kernel to coalesce a run of datagrams from one sender into it (GRO).
struct RecvBufs {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

impl RecvBufs {
    fn new() -> Self {
        let n = quinn_udp::BATCH_SIZE.min(RECV_BUFFERS);
        RecvBufs {
            bufs: (0..n).map(|_| vec![0u8; GRO_BUFFER]).collect(),
            meta: vec![RecvMeta::default(); n],
        }
    }
}

/// Reads what the socket has (up to a few batches) into the endpoint or
/// the DHT's inbox. The syscalls run without the lock, so streams can
/// queue bytes meanwhile.
fn receive(shared: &Arc<Shared>, socket: &UdpSocket, udp: &UdpSocketState, rx: &mut RecvBufs) {
    for _ in 0..RECV_ROUNDS {
        let mut iovs: Vec<IoSliceMut<'_>> =
            rx.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let got = socket.try_io(Interest::READABLE, || {
            udp.recv(socket.into(), &mut iovs, &mut rx.meta)
        });
        drop(iovs);
        let n = match got {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // ICMP errors surface here (port unreachable): not fatal.
            Err(_) => continue,
        };
        let now = Instant::now();
        let mut st = shared.lock();
        let mut datagrams = 0;
        for (buf, meta) in rx.bufs.iter().zip(&rx.meta).take(n) {
            // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d:
            // know them by the address we dial them at.
            let from = SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port());
            // No stride: one datagram (chunks of the whole, at least 1).
            let stride = if meta.stride == 0 {
                meta.len
            } else {
                meta.stride
            };
            for datagram in buf[..meta.len.min(buf.len())].chunks(stride.max(1)) {
                datagrams += 1;
                if lodestone_utp::looks_like_utp(datagram) {
                    st.ep.handle_datagram(now, from, datagram);
                } else if let Some(dht) = &st.dht {
                    let _ = dht.try_send((datagram.to_vec(), from));
                }
            }
        }
        let counts = &shared.counts;
        counts.receives.fetch_add(1, Ordering::Relaxed);
        counts.received.fetch_add(datagrams, Ordering::Relaxed);
    }
}

/// Datagrams on their way out: `batch` holds a run of equal-sized ones to
/// one peer (the last may be shorter), sent as one segmented `sendmsg`.
#[derive(Default)]
struct SendBufs {
    one: Vec<u8>,
    batch: Vec<u8>,
    /// A datagram already taken from the endpoint (in `one`) that did not
    /// fit the last batch.
    pending: Option<lodestone_utp::Transmit>,
}

async fn transmit(
    shared: &Arc<Shared>,
    socket: &UdpSocket,
    udp: &UdpSocketState,
    tx: &mut SendBufs,
) {
    let ipv4 = shared.local.is_ipv4();
    loop {
        let max_segments = udp.max_gso_segments().clamp(1, MAX_SEGMENTS);
        let (first, segment, count) = {
            let mut st = shared.lock();
            let now = Instant::now();
            let first = match tx.pending.take() {
                Some(t) => t,
                None => match st.ep.poll_transmit(now, &mut tx.one) {
                    Some(t) => t,
                    None => return,
                },
            };
            tx.batch.clear();
            tx.batch.extend_from_slice(&tx.one);
            let segment = tx.one.len();
            let mut count = 1;
            // A probe goes alone: it alone carries Don't Fragment.
            while !first.path_mtu_probe
                && count < max_segments
                && tx.batch.len() + segment <= MAX_BATCH_BYTES
            {
                let Some(next) = st.ep.poll_transmit(now, &mut tx.one) else {
                    break;
                };
                if next.destination != first.destination
                    || next.path_mtu_probe
                    || tx.one.len() > segment
                {
                    tx.pending = Some(next);
                    break;
                }
                tx.batch.extend_from_slice(&tx.one);
                count += 1;
                if tx.one.len() < segment {
                    break;
                }
            }
            (first, segment, count)
        };
        let transmit = Transmit {
            destination: first.destination,
            ecn: None,
            contents: &tx.batch,
            segment_size: (count > 1).then_some(segment),
            src_ip: None,
        };
        let counts = &shared.counts;
        counts.sends.fetch_add(1, Ordering::Relaxed);
        counts.sent.fetch_add(count as u64, Ordering::Relaxed);
        if first.path_mtu_probe {
            set_dont_fragment(socket, ipv4, true);
            let _ = send(socket, udp, &transmit).await;
            set_dont_fragment(socket, ipv4, false);
        } else if send(socket, udp, &transmit).await.is_err() && count > 1 {
            // The kernel refused the segmented send (a segment over the
            // device's MTU, no GSO): one datagram at a time, or they would
            // be resent in the same batch and refused again.
            for datagram in tx.batch.chunks(segment) {
                let one = Transmit {
                    contents: datagram,
                    segment_size: None,
                    ..transmit.clone()
                };
                counts.sends.fetch_add(1, Ordering::Relaxed);
                let _ = send(socket, udp, &one).await;
            }
        }
    }
}

/// Sends, waiting while the socket's buffer is full. An error (too big for
/// the path, unreachable, ...) means the packets are lost: uTP resends.
async fn send(socket: &UdpSocket, udp: &UdpSocketState, transmit: &Transmit<'_>) -> io::Result<()> {
    loop {
        match socket.try_io(Interest::WRITABLE, || udp.try_send(socket.into(), transmit)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
            r => return r,
        }
    }
}

/// Hands endpoint events to the streams waiting on them.
fn dispatch(shared: &Arc<Shared>) {
    let mut st = shared.lock();
    while let Some(event) = st.ep.poll_event() {
        match event {
            Event::Readable(id) => {
                if let Some(w) = st.waiters.get_mut(&id).and_then(|w| w.read.take()) {
                    w.wake();
                }
            }
            Event::Writable(id) => {
                if let Some(w) = st.waiters.get_mut(&id).and_then(|w| w.write.take()) {
                    w.wake();
                }
            }
            Event::Connected(id) => {
                if let Some(tx) = st.waiters.get_mut(&id).and_then(|w| w.connect.take()) {
                    let _ = tx.send(Ok(()));
                }
            }
            Event::Closed(id, reason) => {
                if let Some(w) = st.waiters.get_mut(&id) {
                    if let Some(tx) = w.connect.take() {
                        let _ = tx.send(Err(reason));
                    }
                    for waker in [w.read.take(), w.write.take()].into_iter().flatten() {
                        waker.wake();
                    }
                }
            }
            Event::Incoming(id, peer) => {
                // Not `UtpStream::new`: that takes the lock we hold.
                st.waiters.entry(id).or_default();
                let inner = StreamInner {
                    shared: shared.clone(),
                    id,
                    peer,
                };
                let stream = UtpStream {
                    inner: Arc::new(inner),
                };
                let accepted = match &st.incoming {
                    Some(tx) => tx.try_send(stream).map_err(|e| match e {
                        mpsc::error::TrySendError::Full(s)
                        | mpsc::error::TrySendError::Closed(s) => s,
                    }),
                    None => Err(stream),
                };
                if let Err(stream) = accepted {
                    // Dropped below, after the lock: it closes itself.
                    drop(st);
                    drop(stream);
                    st = shared.lock();
                }
            }
        }
    }
}

/// One end of a uTP connection: bytes in order, like a TCP stream.
pub struct UtpStream {
    inner: Arc<StreamInner>,
}

struct StreamInner {
    shared: Arc<Shared>,
    id: ConnectionId,
    peer: SocketAddr,
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.ep.close(self.id);
        st.waiters.remove(&self.id);
        drop(st);
        self.shared.wake.notify_one();
    }
}

impl std::fmt::Debug for UtpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpStream")
            .field("peer", &self.inner.peer)
            .finish()
    }
}

impl UtpStream {
    fn new(shared: Arc<Shared>, id: ConnectionId, peer: SocketAddr) -> Self {
        shared.lock().waiters.entry(id).or_default();
        UtpStream {
            inner: Arc::new(StreamInner { shared, id, peer }),
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Read and write halves that can move to different tasks; the
    /// connection closes when both are gone.
    pub fn into_split(self) -> (UtpReadHalf, UtpWriteHalf) {
        (
            UtpReadHalf {
                inner: self.inner.clone(),
            },
            UtpWriteHalf { inner: self.inner },
        )
    }
}

fn stream_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Unknown => io::Error::new(io::ErrorKind::NotConnected, "uTP connection gone"),
        StreamError::Closed(r) => close_error(r),
    }
}

impl StreamInner {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        // Zero only what the read fills: a 128 KiB buffer zeroed per read
        // would cost more than the copy.
        let want = st.ep.readable(self.id).clamp(1, buf.remaining().max(1));
        let r = st.ep.read(
            self.id,
            buf.initialize_unfilled_to(want.min(buf.remaining())),
        );
        match r {
            Ok(Some(n)) => {
                buf.advance(n);
                drop(st);
                // Reading may reopen our window: the task sends the update.
                self.shared.wake.notify_one();
                Poll::Ready(Ok(()))
            }
            Ok(None) => {
                st.waiters.entry(self.id).or_default().read = Some(cx.waker().clone());
                Poll::Pending
            }
            // A stream that is gone reads as its end.
            Err(StreamError::Unknown) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(stream_error(e))),
        }
    }

    /// Queues as much of `slices` as fits under one lock.
    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        let mut total = 0;
        for s in slices.iter().filter(|s| !s.is_empty()) {
            match st.ep.write(self.id, s) {
                Ok(n) => {
                    total += n;
                    if n < s.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Poll::Ready(Err(stream_error(e))),
                Err(_) => break,
            }
        }
        if total == 0 && slices.iter().any(|s| !s.is_empty()) {
            st.waiters.entry(self.id).or_default().write = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(st);
        self.shared.wake.notify_one();
        Poll::Ready(Ok(total))
    }

    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        match st.ep.write(self.id, data) {
            Ok(0) if !data.is_empty() => {
                st.waiters.entry(self.id).or_default().write = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                drop(st);
                self.shared.wake.notify_one();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(stream_error(e))),
        }
    }

    fn shutdown(&self) {
        self.shared.lock().ep.shutdown(self.id);
        self.shared.wake.notify_one();
    }
}

/// `AsyncRead` for the stream and its read half, `AsyncWrite` for the
/// stream and its write half: all go through [`StreamInner`].
macro_rules! stream_io {
    (read: $($r:ty),*; write: $($w:ty),*) => {
        $(impl AsyncRead for $r {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                self.inner.poll_read(cx, buf)
            }
        })*
        $(impl AsyncWrite for $w {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.inner.poll_write(cx, data)
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                slices: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.inner.poll_write_vectored(cx, slices)
            }
            fn is_write_vectored(&self) -> bool {
                true
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.inner.shutdown();
                Poll::Ready(Ok(()))
            }
        })*
    };
}

stream_io!(read: UtpStream, UtpReadHalf; write: UtpStream, UtpWriteHalf);

pub struct UtpReadHalf {
    inner: Arc<StreamInner>,
}

pub struct UtpWriteHalf {
    inner: Arc<StreamInner>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn bind(addr: &str, seed: u64) -> UtpSocket {
        UtpSocket::bind(addr.parse().unwrap(), Config::default(), seed)
            .await
            .unwrap()
    }

    /// Reads to EOF, failing the test after `secs`.
    async fn read_all(s: &mut UtpStream, secs: u64) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(secs), s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        got
    }

    async fn pair() -> (UtpSocket, UtpSocket) {
        (bind("127.0.0.1:0", 1).await, bind("127.0.0.1:0", 2).await)
    }

    #[tokio::test]
    async fn streams_bytes_both_ways_over_loopback() {
        let (a, b) = pair().await;
        let mut accept = b.incoming();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i * 31 + i / 977) as u8)
            .collect();
        let expect = data.clone();
        let server = tokio::spawn(async move {
            let mut s = accept.recv().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(b"thanks").await.unwrap();
            s.shutdown().await.unwrap();
            got
        });
        let mut c = a.connect(b.local_addr()).await.unwrap();
        c.write_all(&data).await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(read_all(&mut c, 30).await, b"thanks");
        let got = server.await.unwrap();
        assert!(
            got == expect,
            "{} of {} bytes, in order",
            got.len(),
            expect.len()
        );
        // The bulk went out in segmented sends and came in coalesced:
        // one syscall per datagram costs 4x the CPU (see bench/utp.py C).
        let (sent, received) = (a.io_counts(), b.io_counts());
        println!("sender {sent:?}, receiver {received:?}");
        assert!(sent.datagrams_sent > 2_000, "{sent:?}");
        assert!(
            sent.datagrams_sent >= 4 * sent.sends,
            "sends did not batch: {sent:?}"
        );
        assert!(
            received.datagrams_received >= 4 * received.receives,
            "receives did not batch: {received:?}"
        );
    }

    #[tokio::test]
    async fn dht_datagrams_share_the_socket() {
        let (a, _b) = pair().await;
        let mut inbox = a.dht_inbox();
        let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        probe.send_to(b"d1:y1:qe", a.local_addr()).await.unwrap();
        let (bytes, from) = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bytes, b"d1:y1:qe");
        assert_eq!(from, probe.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_dual_stack_socket_speaks_to_ipv4_peers_both_ways() {
        // A socket on [::] sees IPv4 peers as ::ffff:a.b.c.d; the endpoint
        // must know them by the address it dialled, and the DHT too.
        let (any6, v4) = (bind("[::]:0", 3).await, bind("127.0.0.1:0", 4).await);
        let to_any6: SocketAddr = ([127, 0, 0, 1], any6.local_addr().port()).into();
        let mut dht = any6.dht_inbox();
        v4.udp().send_to(b"d1:y1:qe", to_any6).await.unwrap();
        let (_, from) = tokio::time::timeout(Duration::from_secs(5), dht.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, v4.local_addr(), "the DHT sees the IPv4 address");
        for (dialer, listener, to) in [(&v4, &any6, to_any6), (&any6, &v4, v4.local_addr())] {
            let mut accept = listener.incoming();
            let mut c = tokio::time::timeout(Duration::from_secs(10), dialer.connect(to))
                .await
                .expect("connect hung")
                .expect("connect failed");
            c.write_all(b"hello").await.unwrap();
            c.shutdown().await.unwrap();
            let mut s = accept.recv().await.unwrap();
            assert_eq!(s.peer_addr().ip(), std::net::IpAddr::from([127, 0, 0, 1]));
            assert_eq!(read_all(&mut s, 10).await, b"hello");
        }
    }

    #[tokio::test]
    async fn connect_to_a_silent_port_fails_within_seconds() {
        let (a, _) = pair().await;
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = std::time::Instant::now();
        let r = a.connect(silent.local_addr().unwrap()).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
