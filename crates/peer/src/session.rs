//! One peer connection as a state machine: bytes and time in; bytes to
//! send and events out. The driver owns the socket; the torrent decides
//! what to request and whom to serve.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use lodestone_core::{Bitfield, InfoHash, PeerId, PieceIndex};
use lodestone_wire::extended::{ExtendedHandshake, OUR_UT_METADATA_ID, OUR_UT_PEX_ID};
use lodestone_wire::metadata::MetadataMessage;
use lodestone_wire::pex::PexMessage;
use lodestone_wire::{decode, BlockRequest, Handshake, Limits, Message, Reserved, WireError};

/// Largest block a peer may ask us for; bigger requests end the connection.
pub const MAX_REQUEST_LEN: u32 = 128 * 1024;
/// Requests from one peer we queue before rejecting more (our `reqq`).
pub const MAX_PEER_REQUESTS: usize = 2000;
/// The largest message tail [`Session::handle_chunk`] copies to join two
/// read buffers: a block message and some slack.
const MAX_STRADDLE_COPY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub info_hash: InfoHash,
    pub our_id: PeerId,
    pub reserved: Reserved,
    /// Piece length and total length, once the metadata is known; used to
    /// check bitfields, `have` and requests.
    pub shape: Option<TorrentShape>,
    /// Close the connection if the peer says nothing for this long.
    pub idle_timeout: Duration,
    /// Send a keep-alive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// The peer must complete its handshake within this time.
    pub handshake_timeout: Duration,
}

impl SessionConfig {
    pub fn new(info_hash: InfoHash, our_id: PeerId, shape: Option<TorrentShape>) -> Self {
        Self {
            info_hash,
            our_id,
            reserved: Reserved::ours(),
            shape,
            idle_timeout: Duration::from_secs(180),
            keepalive_interval: Duration::from_secs(90),
            handshake_timeout: Duration::from_secs(15),
        }
    }
}

/// Enough of the torrent to validate piece numbers and ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorrentShape {
    pub piece_length: u32,
    pub total_length: u64,
    pub num_pieces: u32,
}

impl TorrentShape {
    pub fn new(piece_length: u32, total_length: u64) -> Self {
        let num_pieces = u32::try_from(total_length.div_ceil(u64::from(piece_length.max(1))))
            .unwrap_or(u32::MAX);
        Self {
            piece_length,
            total_length,
            num_pieces,
        }
    }

    pub fn piece_len(&self, piece: PieceIndex) -> Option<u32> {
        if piece.0 >= self.num_pieces {
            return None;
        }
        let start = u64::from(piece.0) * u64::from(self.piece_length);
        let len = (self.total_length - start).min(u64::from(self.piece_length));
        u32::try_from(len).ok()
    }
}

/// Why the session ended. The driver closes the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("protocol violation: {0}")]
    Wire(WireError),
    #[error("peer is for another torrent")]
    WrongInfoHash,
    #[error("connected to ourselves")]
    SelfConnection,
    #[error("invalid bitfield: {0}")]
    Bitfield(lodestone_core::BitfieldError),
    #[error("'have' for piece {0}, past the last piece")]
    HaveOutOfRange(u32),
    #[error("request for {0} bytes, more than the 128 KiB limit")]
    RequestTooLarge(u32),
    #[error("more than {MAX_PEER_REQUESTS} outstanding requests")]
    TooManyRequests,
    #[error("no handshake within the time limit")]
    HandshakeTimeout,
    #[error("peer silent for too long")]
    IdleTimeout,
}

impl From<WireError> for SessionError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer's handshake arrived and matches.
    Connected {
        peer_id: PeerId,
        reserved: Reserved,
    },
    /// Raw bitfield bytes (checked against the shape when it is known).
    Bitfield(Bytes),
    HaveAll,
    HaveNone,
    Have(PieceIndex),
    Choked,
    Unchoked,
    Interested,
    NotInterested,
    /// Block data arrived. Whether we asked for it is the picker's call.
    Block {
        piece: PieceIndex,
        begin: u32,
        data: Bytes,
    },
    /// A valid request while we are not choking the peer.
    Request(BlockRequest),
    Cancel(BlockRequest),
    Rejected(BlockRequest),
    AllowedFast(PieceIndex),
    Suggest(PieceIndex),
    DhtPort(u16),
    ExtendedHandshake(Box<ExtendedHandshake>),
    Metadata(MetadataMessage),
    Pex(PexMessage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Payload bytes of blocks received and sent.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Extension messages we could not parse (ignored, not fatal).
    pub bad_extension_messages: u32,
}

pub struct Session {
    cfg: SessionConfig,
    limits: Limits,
    peer: Option<Handshake>,
    recv: BytesMut,
    /// Control messages not yet handed to the driver.
    pending: BytesMut,
    out: VecDeque<Bytes>,
    events: VecDeque<Event>,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    /// Requests the peer made that the driver has not answered yet.
    peer_requests: usize,
    peer_ext: Option<ExtendedHandshake>,
    created: Instant,
    last_recv: Instant,
    last_send: Instant,
    counters: Counters,
}

impl Session {
    /// Both directions send their handshake at once; for an incoming
    /// connection the driver has read the peer's handshake to find the
    /// torrent and passes those bytes to `handle_bytes` as usual.
    pub fn new(cfg: SessionConfig, now: Instant) -> Self {
        let limits = match cfg.shape {
            Some(s) => Limits::for_pieces(s.num_pieces),
            None => Limits::default(),
        };
        let hs = Handshake {
            reserved: cfg.reserved,
            info_hash: cfg.info_hash,
            peer_id: cfg.our_id,
        };
        let mut pending = BytesMut::with_capacity(256);
        pending.extend_from_slice(&hs.encode());
        Self {
            cfg,
            limits,
            peer: None,
            recv: BytesMut::new(),
            pending,
            out: VecDeque::new(),
            events: VecDeque::new(),
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            peer_requests: 0,
            peer_ext: None,
            created: now,
            last_recv: now,
            last_send: now,
            counters: Counters::default(),
        }
    }

    /// The metadata became known (magnet): check from now on.
    pub fn set_shape(&mut self, shape: TorrentShape) {
        self.cfg.shape = Some(shape);
        self.limits = Limits {
            num_pieces: Some(shape.num_pieces),
            ..self.limits
        };
    }

    pub fn peer_handshake(&self) -> Option<&Handshake> {
        self.peer.as_ref()
    }

    pub fn peer_extensions(&self) -> Option<&ExtendedHandshake> {
        self.peer_ext.as_ref()
    }

    pub fn am_choking(&self) -> bool {
        self.am_choking
    }

    pub fn am_interested(&self) -> bool {
        self.am_interested
    }

    pub fn peer_choking(&self) -> bool {
        self.peer_choking
    }

    pub fn peer_interested(&self) -> bool {
        self.peer_interested
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn fast(&self) -> bool {
        self.cfg.reserved.fast() && self.peer.is_some_and(|p| p.reserved.fast())
    }

    /// Bytes read from the socket (copied; see [`Session::handle_chunk`]).
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) -> Result<(), SessionError> {
        self.recv.extend_from_slice(bytes);
        self.process(now)
    }

    /// A buffer read from the socket, taken without copying when it
    /// follows what is left of the previous one in memory (the driver
    /// splits consecutive reads off one allocation): blocks then reach the
    /// caller as slices of the read buffer itself.
    pub fn handle_chunk(&mut self, now: Instant, mut chunk: BytesMut) -> Result<(), SessionError> {
        if self.recv.is_empty() {
            self.recv = chunk;
            return self.process(now);
        }
        let contiguous = self.recv.as_ptr().wrapping_add(self.recv.len()) == chunk.as_ptr();
        if contiguous || self.peer.is_none() {
            // O(1) when contiguous; the handshake is small anyway.
            self.recv.unsplit(chunk);
            return self.process(now);
        }
        // A new read buffer while a message is cut in two: copy only the
        // rest of that message, then take the new buffer as it is.
        while !chunk.is_empty() {
            let need = match self.recv.get(..4) {
                None => 4 - self.recv.len(),
                Some(prefix) => {
                    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                    (len as usize + 4).saturating_sub(self.recv.len())
                }
            };
            if need == 0 || need > MAX_STRADDLE_COPY {
                // A whole message already, or a large one: let the decoder
                // judge it (and refuse what is too long) after a plain join.
                break;
            }
            let take = need.min(chunk.len());
            self.recv.extend_from_slice(&chunk.split_to(take));
        }
        self.process(now)?;
        if self.recv.is_empty() {
            self.recv = chunk;
        } else {
            self.recv.unsplit(chunk);
        }
        self.process(now)
    }

    fn process(&mut self, now: Instant) -> Result<(), SessionError> {
        self.last_recv = now;
        if self.peer.is_none() {
            let Some(hs) = Handshake::decode(&self.recv)? else {
                return Ok(());
            };
            if hs.info_hash != self.cfg.info_hash {
                return Err(SessionError::WrongInfoHash);
            }
            if hs.peer_id == self.cfg.our_id {
                return Err(SessionError::SelfConnection);
            }
            let _ = self.recv.split_to(lodestone_wire::HANDSHAKE_LEN);
            self.peer = Some(hs);
            self.events.push_back(Event::Connected {
                peer_id: hs.peer_id,
                reserved: hs.reserved,
            });
        }
        while let Some(msg) = decode(&mut self.recv, &self.limits)? {
            self.on_message(msg)?;
        }
        Ok(())
    }

    fn on_message(&mut self, msg: Message) -> Result<(), SessionError> {
        let shape = self.cfg.shape;
        match msg {
            Message::KeepAlive | Message::Unknown { .. } => {}
            Message::Choke => {
                self.peer_choking = true;
                self.events.push_back(Event::Choked);
            }
            Message::Unchoke => {
                self.peer_choking = false;
                self.events.push_back(Event::Unchoked);
            }
            Message::Interested => {
                self.peer_interested = true;
                self.events.push_back(Event::Interested);
            }
            Message::NotInterested => {
                self.peer_interested = false;
                self.events.push_back(Event::NotInterested);
            }
            Message::Have(p) => {
                if let Some(s) = shape {
                    if p.0 >= s.num_pieces {
                        return Err(SessionError::HaveOutOfRange(p.0));
                    }
                }
                self.events.push_back(Event::Have(p));
            }
            Message::Bitfield(raw) => {
                if let Some(s) = shape {
                    Bitfield::from_bytes(&raw, s.num_pieces).map_err(SessionError::Bitfield)?;
                }
                self.events.push_back(Event::Bitfield(raw));
            }
            Message::HaveAll => self.events.push_back(Event::HaveAll),
            Message::HaveNone => self.events.push_back(Event::HaveNone),
            Message::Request(r) => self.on_request(r)?,
            Message::Cancel(r) => {
                self.peer_requests = self.peer_requests.saturating_sub(1);
                self.events.push_back(Event::Cancel(r));
            }
            Message::Piece { piece, begin, data } => {
                self.counters.downloaded += data.len() as u64;
                self.events.push_back(Event::Block { piece, begin, data });
            }
            Message::Reject(r) => self.events.push_back(Event::Rejected(r)),
            Message::AllowedFast(p) => self.events.push_back(Event::AllowedFast(p)),
            Message::Suggest(p) => self.events.push_back(Event::Suggest(p)),
            Message::Port(p) => {
                if p != 0 {
                    self.events.push_back(Event::DhtPort(p));
                }
            }
            Message::Extended { id, payload } => self.on_extended(id, payload),
        }
        Ok(())
    }

    fn on_request(&mut self, r: BlockRequest) -> Result<(), SessionError> {
        if r.len > MAX_REQUEST_LEN {
            return Err(SessionError::RequestTooLarge(r.len));
        }
        let in_range = self
            .cfg
            .shape
            .and_then(|s| s.piece_len(r.piece))
            .is_some_and(|len| {
                r.len > 0 && u64::from(r.begin) + u64::from(r.len) <= u64::from(len)
            });
        if !in_range || self.am_choking {
            // BEP 6: answer with a reject; without it, silently drop.
            if self.fast() {
                self.push(Message::Reject(r));
            }
            return Ok(());
        }
        if self.peer_requests >= MAX_PEER_REQUESTS {
            return Err(SessionError::TooManyRequests);
        }
        self.peer_requests += 1;
        self.events.push_back(Event::Request(r));
        Ok(())
    }

    fn on_extended(&mut self, id: u8, payload: Bytes) {
        match id {
            0 => match ExtendedHandshake::decode(&payload) {
                Ok(h) => {
                    self.peer_ext = Some(h.clone());
                    self.events.push_back(Event::ExtendedHandshake(Box::new(h)));
                }
                Err(_) => self.counters.bad_extension_messages += 1,
            },
            OUR_UT_METADATA_ID => match MetadataMessage::decode(&payload) {
                Ok(m) => self.events.push_back(Event::Metadata(m)),
                Err(_) => self.counters.bad_extension_messages += 1,
            },
            OUR_UT_PEX_ID => match PexMessage::decode(&payload) {
                Ok(m) => self.events.push_back(Event::Pex(m)),
                Err(_) => self.counters.bad_extension_messages += 1,
            },
            _ => {}
        }
    }

    /// Keep-alives and timeouts.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        if self.peer.is_none() && now >= self.created + self.cfg.handshake_timeout {
            return Err(SessionError::HandshakeTimeout);
        }
        if now >= self.last_recv + self.cfg.idle_timeout {
            return Err(SessionError::IdleTimeout);
        }
        if now >= self.last_send + self.cfg.keepalive_interval {
            self.push(Message::KeepAlive);
            self.last_send = now;
        }
        Ok(())
    }

    /// When `handle_timeout` next has something to do.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = (self.last_recv + self.cfg.idle_timeout)
            .min(self.last_send + self.cfg.keepalive_interval);
        if self.peer.is_none() {
            t = t.min(self.created + self.cfg.handshake_timeout);
        }
        t
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next bytes to write to the socket.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.flush_pending();
        let b = self.out.pop_front();
        if b.is_some() {
            self.last_send = now;
        }
        b
    }

    fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            let b = self.pending.split().freeze();
            self.out.push_back(b);
        }
    }

    fn push(&mut self, m: Message) {
        m.encode(&mut self.pending);
    }

    // Commands.

    /// What we have, right after the handshake: have_all / have_none with
    /// the fast extension, else a bitfield, all zeros if we have nothing.
    pub fn send_have_set(&mut self, have: &Bitfield) {
        if self.fast() && have.is_full() {
            self.push(Message::HaveAll);
        } else if self.fast() && have.none() {
            self.push(Message::HaveNone);
        } else {
            // Even when empty. libtorrent sends nothing here ("not sending
            // bitfield, have none": BEP 3 lets a peer with no pieces skip
            // it), but some clients wait for a first message before they go
            // on (XD waits for the bitfield itself: majestrate/XD#133), and
            // we would say nothing until our 90 s keep-alive. An all-zero
            // bitfield is the message BEP 3 defines for this moment, so a
            // client that parses any bitfield takes it; a keep-alive would
            // not satisfy one that waits for the bitfield. It costs one bit
            // per piece, once.
            self.push(Message::Bitfield(Bytes::copy_from_slice(have.as_bytes())));
        }
    }

    /// Have-none where the fast extension is on: a magnet's first word,
    /// before the piece count (and so a bitfield's length) is known.
    pub fn send_have_none_if_fast(&mut self) {
        if self.fast() {
            self.push(Message::HaveNone);
        }
    }

    pub fn send_extended_handshake(&mut self, h: &ExtendedHandshake) {
        if self.peer.is_some_and(|p| p.reserved.extension_protocol()) {
            self.push(Message::Extended {
                id: 0,
                payload: Bytes::from(h.encode()),
            });
        }
    }

    /// Send an extension message with the id the peer assigned to `name`.
    /// Returns false if the peer does not support it.
    pub fn send_extension(&mut self, name: &str, payload: Vec<u8>) -> bool {
        let Some(id) = self.peer_ext.as_ref().and_then(|e| e.id_of(name)) else {
            return false;
        };
        self.push(Message::Extended {
            id,
            payload: Bytes::from(payload),
        });
        true
    }

    pub fn send_have(&mut self, p: PieceIndex) {
        self.push(Message::Have(p));
    }

    pub fn set_interested(&mut self, on: bool) {
        if on != self.am_interested {
            self.am_interested = on;
            self.push(if on {
                Message::Interested
            } else {
                Message::NotInterested
            });
        }
    }

    pub fn choke(&mut self) {
        if !self.am_choking {
            self.am_choking = true;
            self.push(Message::Choke);
            // Without BEP 6 a choke discards the peer's queue; with it the
            // driver rejects what it drops.
            self.peer_requests = 0;
        }
    }

    pub fn unchoke(&mut self) {
        if self.am_choking {
            self.am_choking = false;
            self.push(Message::Unchoke);
        }
    }

    pub fn request(&mut self, r: BlockRequest) {
        self.push(Message::Request(r));
    }

    pub fn cancel(&mut self, r: BlockRequest) {
        self.push(Message::Cancel(r));
    }

    /// Tell the peer we will not serve `r` (only with BEP 6).
    pub fn reject(&mut self, r: BlockRequest) {
        self.peer_requests = self.peer_requests.saturating_sub(1);
        if self.fast() {
            self.push(Message::Reject(r));
        }
    }

    pub fn allowed_fast(&mut self, p: PieceIndex) {
        if self.fast() {
            self.push(Message::AllowedFast(p));
        }
    }

    pub fn send_dht_port(&mut self, port: u16) {
        if self.peer.is_some_and(|p| p.reserved.dht()) {
            self.push(Message::Port(port));
        }
    }

    /// Answer a request with its data. The data is queued as its own chunk
    /// so it is never copied into the control buffer.
    pub fn send_block(&mut self, piece: PieceIndex, begin: u32, data: Bytes) {
        self.peer_requests = self.peer_requests.saturating_sub(1);
        self.counters.uploaded += data.len() as u64;
        lodestone_wire::encode_piece_header(piece, begin, data.len() as u32, &mut self.pending);
        self.flush_pending();
        self.out.push_back(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IH: InfoHash = InfoHash([7; 20]);

    fn pair(now: Instant) -> (Session, Session) {
        let shape = Some(TorrentShape::new(32768, 100_000));
        let a = Session::new(SessionConfig::new(IH, PeerId([1; 20]), shape), now);
        let b = Session::new(SessionConfig::new(IH, PeerId([2; 20]), shape), now);
        (a, b)
    }

    /// Move every queued byte from `from` to `to`.
    fn pump(now: Instant, from: &mut Session, to: &mut Session) -> Result<(), SessionError> {
        while let Some(b) = from.poll_transmit(now) {
            to.handle_bytes(now, &b)?;
        }
        Ok(())
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn raw(msg: Message) -> Vec<u8> {
        let mut b = BytesMut::new();
        msg.encode(&mut b);
        b.to_vec()
    }

    fn connected(now: Instant) -> (Session, Session) {
        let (mut a, mut b) = pair(now);
        pump(now, &mut a, &mut b).unwrap();
        pump(now, &mut b, &mut a).unwrap();
        events(&mut a);
        events(&mut b);
        (a, b)
    }

    #[test]
    fn handshake_and_have_set() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        pump(now, &mut a, &mut b).unwrap();
        assert!(
            matches!(&events(&mut b)[..], [Event::Connected { peer_id, .. }] if *peer_id == PeerId([1; 20]))
        );
        pump(now, &mut b, &mut a).unwrap();
        events(&mut a);
        a.send_have_set(&Bitfield::full(4));
        b.send_have_set(&Bitfield::new(4));
        pump(now, &mut a, &mut b).unwrap();
        pump(now, &mut b, &mut a).unwrap();
        assert_eq!(events(&mut b), [Event::HaveAll]);
        assert_eq!(events(&mut a), [Event::HaveNone]);
    }

    /// Without the fast extension on both sides, a peer with no pieces
    /// still says so at once (an all-zero bitfield): a client that waits
    /// for our first message must not wait for the 90 s keep-alive.
    #[test]
    fn an_empty_have_set_without_fast_is_a_zero_bitfield() {
        let now = Instant::now();
        for (a_fast, b_fast) in [(true, false), (false, true), (false, false)] {
            let shape = Some(TorrentShape::new(32768, 100_000));
            let cfg = |id: u8, fast: bool| {
                let mut c = SessionConfig::new(IH, PeerId([id; 20]), shape);
                if !fast {
                    c.reserved.0[7] &= !0x04;
                }
                c
            };
            let mut a = Session::new(cfg(1, a_fast), now);
            let mut b = Session::new(cfg(2, b_fast), now);
            pump(now, &mut a, &mut b).unwrap();
            pump(now, &mut b, &mut a).unwrap();
            events(&mut a);
            events(&mut b);
            a.send_have_set(&Bitfield::new(4));
            let sent: Vec<u8> = std::iter::from_fn(|| a.poll_transmit(now))
                .flat_map(|b| b.to_vec())
                .collect();
            assert_eq!(sent, [0, 0, 0, 2, 5, 0], "fast: us {a_fast}, them {b_fast}");
            b.handle_bytes(now, &sent).unwrap();
            assert_eq!(
                events(&mut b),
                [Event::Bitfield(Bytes::from_static(&[0]))],
                "fast: us {a_fast}, them {b_fast}"
            );
        }
    }

    proptest::proptest! {
        /// Reads cut anywhere, some split off one allocation (joined
        /// without copying) and some in new ones (only the cut message is
        /// copied), give the same events as the whole stream at once.
        #[test]
        fn chunked_reads_give_the_same_events(
            lens in proptest::collection::vec(0usize..=16384, 1..12),
            cuts in proptest::collection::vec((1usize..40_000, proptest::bool::ANY), 1..30),
        ) {
            let now = Instant::now();
            let mut stream = Vec::new();
            for (i, len) in lens.iter().enumerate() {
                stream.extend(raw(Message::Have(PieceIndex(i as u32 % 4))));
                stream.extend(raw(Message::Piece {
                    piece: PieceIndex(i as u32 % 4),
                    begin: 0,
                    data: Bytes::from(vec![i as u8; *len]),
                }));
                stream.extend(raw(Message::KeepAlive));
            }
            let (mut whole, _) = connected(now);
            whole.handle_bytes(now, &stream).unwrap();
            let want = events(&mut whole);

            let (mut chunked, _) = connected(now);
            let mut rest = &stream[..];
            let mut alloc = BytesMut::new();
            for (cut, fresh) in cuts.iter().chain(std::iter::once(&(usize::MAX, true))) {
                if rest.is_empty() {
                    break;
                }
                let n = (*cut).min(rest.len());
                if *fresh || alloc.capacity() - alloc.len() < n {
                    alloc = BytesMut::with_capacity(n + 40_000);
                }
                alloc.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                chunked.handle_chunk(now, alloc.split()).unwrap();
            }
            proptest::prop_assert_eq!(events(&mut chunked), want);
        }
    }

    #[test]
    fn a_new_read_buffer_is_not_copied() {
        let now = Instant::now();
        let (mut s, _) = connected(now);
        let block = |fill: u8| {
            raw(Message::Piece {
                piece: PieceIndex(1),
                begin: 0,
                data: Bytes::from(vec![fill; 10_000]),
            })
        };
        let (a, b) = (block(1), block(2));
        s.handle_chunk(now, BytesMut::from(&a[..5000])).unwrap();
        let mut second = BytesMut::from(&a[5000..]);
        second.extend_from_slice(&b);
        let range = second.as_ptr_range();
        s.handle_chunk(now, second).unwrap();
        let blocks: Vec<Bytes> = events(&mut s)
            .into_iter()
            .filter_map(|e| match e {
                Event::Block { data, .. } => Some(data),
                _ => None,
            })
            .collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0], vec![1u8; 10_000]);
        assert_eq!(blocks[1], vec![2u8; 10_000]);
        // Only the message cut in two was copied; the next one is a slice
        // of the buffer it was read into.
        assert!(range.contains(&blocks[1].as_ptr()));
        assert!(!range.contains(&blocks[0].as_ptr()));
    }

    #[test]
    fn request_and_block_flow() {
        let now = Instant::now();
        let (mut a, mut b) = connected(now);
        b.set_interested(true);
        a.unchoke();
        let r = BlockRequest {
            piece: PieceIndex(3),
            begin: 0,
            len: 1696,
        };
        b.request(r);
        pump(now, &mut b, &mut a).unwrap();
        assert_eq!(events(&mut a), [Event::Interested, Event::Request(r)]);
        a.send_block(r.piece, r.begin, Bytes::from(vec![5u8; 1696]));
        pump(now, &mut a, &mut b).unwrap();
        let ev = events(&mut b);
        assert_eq!(ev[0], Event::Unchoked);
        assert!(
            matches!(&ev[1], Event::Block { piece: PieceIndex(3), begin: 0, data } if data.len() == 1696)
        );
        assert_eq!(a.counters().uploaded, 1696);
        assert_eq!(b.counters().downloaded, 1696);
    }

    #[test]
    fn bad_requests_are_rejected_or_fatal() {
        let now = Instant::now();
        let (mut a, mut b) = connected(now);
        // While choked: rejected (both sides speak BEP 6).
        let r = BlockRequest {
            piece: PieceIndex(0),
            begin: 0,
            len: 16384,
        };
        a.handle_bytes(now, &raw(Message::Request(r))).unwrap();
        assert!(events(&mut a).is_empty());
        pump(now, &mut a, &mut b).unwrap();
        assert_eq!(events(&mut b), [Event::Rejected(r)]);
        a.unchoke();
        // Out of range: the last piece (3) has 1696 bytes.
        let past_end = BlockRequest {
            piece: PieceIndex(3),
            begin: 0,
            len: 1697,
        };
        let no_piece = BlockRequest {
            piece: PieceIndex(4),
            begin: 0,
            len: 1,
        };
        let empty = BlockRequest {
            piece: PieceIndex(0),
            begin: 0,
            len: 0,
        };
        for bad in [past_end, no_piece, empty] {
            a.handle_bytes(now, &raw(Message::Request(bad))).unwrap();
        }
        assert!(events(&mut a).is_empty());
        pump(now, &mut a, &mut b).unwrap();
        let ev = events(&mut b);
        assert_eq!(ev.len(), 4, "{ev:?}");
        // Larger than 128 KiB ends the connection.
        let huge = BlockRequest {
            piece: PieceIndex(0),
            begin: 0,
            len: 128 * 1024 + 1,
        };
        assert_eq!(
            a.handle_bytes(now, &raw(Message::Request(huge))),
            Err(SessionError::RequestTooLarge(128 * 1024 + 1))
        );
    }

    #[test]
    fn hostile_messages_end_the_session() {
        let now = Instant::now();
        let (mut a, _) = connected(now);
        assert!(matches!(
            a.handle_bytes(now, &[0x80, 0, 0, 0]),
            Err(SessionError::Wire(WireError::TooLong { .. }))
        ));
        let (mut a, _) = connected(now);
        // 4 pieces: one byte, low 4 bits spare.
        assert!(matches!(
            a.handle_bytes(now, &raw(Message::Bitfield(Bytes::from_static(&[0xff])))),
            Err(SessionError::Bitfield(
                lodestone_core::BitfieldError::SpareBitsSet
            ))
        ));
        let (mut a, _) = connected(now);
        assert!(matches!(
            a.handle_bytes(now, &raw(Message::Bitfield(Bytes::from_static(&[0xf0, 0])))),
            Err(SessionError::Wire(WireError::BadBitfieldLength { .. }))
        ));
        let (mut a, _) = connected(now);
        assert_eq!(
            a.handle_bytes(now, &raw(Message::Have(PieceIndex(4)))),
            Err(SessionError::HaveOutOfRange(4))
        );
    }

    #[test]
    fn wrong_torrent_and_self_connection() {
        let now = Instant::now();
        let mut a = Session::new(SessionConfig::new(IH, PeerId([1; 20]), None), now);
        let mut other = Session::new(
            SessionConfig::new(InfoHash([8; 20]), PeerId([2; 20]), None),
            now,
        );
        assert_eq!(
            pump(now, &mut other, &mut a),
            Err(SessionError::WrongInfoHash)
        );
        let mut a = Session::new(SessionConfig::new(IH, PeerId([1; 20]), None), now);
        let mut me = Session::new(SessionConfig::new(IH, PeerId([1; 20]), None), now);
        assert_eq!(
            pump(now, &mut me, &mut a),
            Err(SessionError::SelfConnection)
        );
        let mut a = Session::new(SessionConfig::new(IH, PeerId([1; 20]), None), now);
        assert!(matches!(
            a.handle_bytes(now, b"HTTP/1.1 200 OK"),
            Err(SessionError::Wire(WireError::NotBitTorrent))
        ));
    }

    #[test]
    fn timeouts_and_keepalive() {
        let t0 = Instant::now();
        let mut a = Session::new(SessionConfig::new(IH, PeerId([1; 20]), None), t0);
        assert_eq!(a.poll_timeout(), t0 + Duration::from_secs(15));
        assert_eq!(
            a.handle_timeout(t0 + Duration::from_secs(15)),
            Err(SessionError::HandshakeTimeout)
        );
        let (mut a, mut b) = connected(t0);
        let t1 = t0 + Duration::from_secs(90);
        assert_eq!(a.poll_timeout(), t1);
        a.handle_timeout(t1).unwrap();
        assert_eq!(a.poll_transmit(t1).as_deref(), Some(&[0u8, 0, 0, 0][..]));
        b.handle_timeout(t1).unwrap();
        let t2 = t0 + Duration::from_secs(180);
        assert_eq!(b.handle_timeout(t2), Err(SessionError::IdleTimeout));
    }

    #[test]
    fn extension_messages() {
        let now = Instant::now();
        let (mut a, mut b) = connected(now);
        let mut h = ExtendedHandshake::default();
        h.extensions
            .insert("ut_metadata".into(), OUR_UT_METADATA_ID);
        h.metadata_size = Some(1234);
        a.send_extended_handshake(&h);
        b.send_extended_handshake(&h);
        pump(now, &mut a, &mut b).unwrap();
        pump(now, &mut b, &mut a).unwrap();
        assert!(
            matches!(&events(&mut b)[..], [Event::ExtendedHandshake(e)] if e.metadata_size == Some(1234))
        );
        events(&mut a);
        assert!(a.send_extension(
            "ut_metadata",
            MetadataMessage::Request { piece: 0 }.encode()
        ));
        assert!(!a.send_extension("ut_pex", Vec::new()));
        pump(now, &mut a, &mut b).unwrap();
        assert_eq!(
            events(&mut b),
            [Event::Metadata(MetadataMessage::Request { piece: 0 })]
        );
        // Garbage in an extension message is counted and ignored.
        b.handle_bytes(
            now,
            &raw(Message::Extended {
                id: OUR_UT_METADATA_ID,
                payload: Bytes::from_static(b"zz"),
            }),
        )
        .unwrap();
        assert_eq!(b.counters().bad_extension_messages, 1);
    }
}
