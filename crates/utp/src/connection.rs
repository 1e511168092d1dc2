//! One uTP connection: the BEP 29 state machine over a send queue, a
//! receive queue, the RTT estimator, LEDBAT and the MTU search. The
//! endpoint owns connections and routes datagrams to them by connection id.

use crate::ledbat::{Ledbat, LedbatConfig};
use crate::mtu::MtuSearch;
use crate::packet::{Header, Kind, Packet, HEADER_LEN, MAX_SACK_BYTES};
use crate::recv::{Arrival, RecvQueue, MAX_AHEAD};
use crate::rtt::Rtt;
use crate::send::{Acked, SendQueue};
use crate::seq::Seq;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Per-connection settings (the endpoint's [`crate::Config`] hands them out).
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    pub ledbat: LedbatConfig,
    /// Bytes we buffer for the reader; what we advertise as `wnd_size`.
    pub recv_buffer: usize,
    /// Bytes the writer may queue ahead of the acks.
    pub send_buffer: usize,
    /// SYNs sent (first included) before a connect fails.
    pub syn_tries: u32,
    /// Consecutive data timeouts before the connection is declared dead.
    pub max_timeouts: u32,
    /// An idle connection sends an ack this often to keep NAT mappings.
    pub keepalive: Duration,
    /// An incoming SYN that the initiator never follows up is dropped.
    pub half_open: Duration,
    /// The largest datagram we read, said on the SYN and the answer to it
    /// (our extension; `None`: say nothing, and send Ethernet-sized
    /// packets at most, as to libtorrent). Off by default: Transmission
    /// 3.00's libutp ignores a SYN that carries an extension it does not
    /// know (its interop test found it), so only a swarm known to be all
    /// Lodestone may turn it on.
    pub max_datagram: Option<u16>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            ledbat: LedbatConfig::default(),
            recv_buffer: 1 << 20,
            send_buffer: 1 << 20,
            syn_tries: 3,
            max_timeouts: 6,
            keepalive: Duration::from_secs(29),
            half_open: Duration::from_secs(10),
            max_datagram: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides sent FIN and everything was acked (or we closed and our
    /// FIN was acked).
    Finished,
    /// The peer sent RESET.
    Reset,
    /// The peer stopped acking (or never answered the SYN).
    TimedOut,
    /// The SYN was answered with RESET.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    SynSent,
    SynRecv,
    Connected,
    Closed(CloseReason),
}

/// What changed for the application since it last asked.
#[derive(Clone, Copy, Debug, Default)]
pub struct Changes {
    pub connected: bool,
    pub readable: bool,
    pub writable: bool,
    pub closed: Option<CloseReason>,
}

#[derive(Debug)]
pub struct Connection {
    peer: SocketAddr,
    state: State,
    /// The id on packets we send, and the one on packets we accept.
    send_id: u16,
    recv_id: u16,
    cfg: ConnectionConfig,

    /// The sequence number of our next new packet.
    seq_nr: Seq,
    send: SendQueue,
    recv: RecvQueue,
    /// The peer's advertised receive window.
    peer_window: u32,
    ledbat: Ledbat,
    rtt: Rtt,
    mtu: MtuSearch,
    /// The last ack number the peer sent and how often in a row.
    last_peer_ack: Option<Seq>,
    duplicate_acks: u32,
    /// Losses of packets older than this are the same congestion event as
    /// the last window cut.
    loss_fence: Seq,
    /// When the window was last cut (a loss or a timeout): a resent packet
    /// lost again is a new congestion event only if resent after it.
    last_cut: Option<Instant>,
    /// A packet shorter than a full one is in flight (Nagle: one at a time).
    partial_in_flight: Option<Seq>,
    /// Our measurement of the peer's one-way delay to us, echoed back.
    reply_micro: u32,
    /// How large packets may grow if the peer reads large datagrams.
    path_ceiling: u16,

    need_ack: bool,
    /// The datagram `poll_transmit` wrote last is an MTU probe's first try.
    probing: bool,
    /// The application closed its side: FIN once the queue drains.
    local_closed: bool,
    fin_sent: bool,
    fin_acked: bool,
    syn_sent: u32,
    created: Instant,
    last_sent: Instant,
    /// Retransmission deadline while packets are unacked (or a SYN waits).
    rto_at: Option<Instant>,
    changes: Changes,
}

impl Connection {
    /// An outgoing connection; its SYN goes out on the next poll.
    pub fn connect(
        now: Instant,
        cfg: ConnectionConfig,
        peer: SocketAddr,
        recv_id: u16,
        mtu: MtuSearch,
        path_ceiling: u16,
    ) -> Self {
        // The SYN is packet 1; data starts at 2.
        let mut c = Self::new(
            now,
            cfg,
            peer,
            recv_id.wrapping_add(1),
            recv_id,
            Seq(2),
            Seq(0),
            mtu,
        );
        c.path_ceiling = path_ceiling;
        c.state = State::SynSent;
        c
    }

    /// The peer said (or not) how large a datagram it reads: past
    /// Ethernet's frame only if it did, and only as far as the path goes.
    fn peer_reads(&mut self, max_datagram: Option<u16>) {
        if let (Some(theirs), Some(_)) = (max_datagram, self.cfg.max_datagram) {
            self.mtu.raise_ceiling(theirs.min(self.path_ceiling));
        }
    }

    /// An incoming SYN. `seq_nr` is our random first sequence number.
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        now: Instant,
        cfg: ConnectionConfig,
        peer: SocketAddr,
        syn_packet: &Packet<'_>,
        seq_nr: Seq,
        now_us: u32,
        mtu: MtuSearch,
        path_ceiling: u16,
    ) -> Self {
        let syn = &syn_packet.header;
        let mut c = Self::new(
            now,
            cfg,
            peer,
            syn.conn_id,
            syn.conn_id.wrapping_add(1),
            seq_nr,
            syn.seq_nr,
            mtu,
        );
        c.path_ceiling = path_ceiling;
        c.peer_reads(syn_packet.max_datagram);
        c.state = State::SynRecv;
        c.peer_window = syn.wnd_size;
        c.reply_micro = now_us.wrapping_sub(syn.timestamp_us);
        c.need_ack = true;
        c
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        now: Instant,
        cfg: ConnectionConfig,
        peer: SocketAddr,
        send_id: u16,
        recv_id: u16,
        seq_nr: Seq,
        ack_nr: Seq,
        mtu: MtuSearch,
    ) -> Self {
        let initial_window = cfg.ledbat.min_window.max(mtu.confirmed() as u32 * 4);
        Connection {
            peer,
            state: State::SynSent,
            send_id,
            recv_id,
            seq_nr,
            send: SendQueue::new(cfg.send_buffer),
            recv: RecvQueue::new(ack_nr, cfg.recv_buffer),
            peer_window: cfg.recv_buffer as u32,
            ledbat: Ledbat::new(cfg.ledbat.clone(), initial_window),
            rtt: Rtt::default(),
            mtu,
            last_peer_ack: None,
            duplicate_acks: 0,
            loss_fence: seq_nr,
            last_cut: None,
            partial_in_flight: None,
            reply_micro: 0,
            path_ceiling: 0,
            need_ack: false,
            probing: false,
            local_closed: false,
            fin_sent: false,
            fin_acked: false,
            syn_sent: 0,
            created: now,
            last_sent: now,
            rto_at: None,
            changes: Changes::default(),
            cfg,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    /// Done for good: the endpoint may forget it once the application has
    /// let go.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Closed(_)) || (self.local_closed && self.fin_acked)
    }

    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            rtt: self.rtt.smoothed(),
            window: self.ledbat.window(),
            in_flight: self.send.in_flight(),
            queuing_delay: self.ledbat.queuing_delay(),
            packet_size: self.mtu.confirmed(),
            peer_window: self.peer_window,
        }
    }

    // ----- application side -----

    /// Copies received bytes into `buf`. `Ok(None)` means nothing yet;
    /// `Ok(Some(0))` means the peer finished.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, CloseReason> {
        if self.recv.readable() > 0 {
            let mss = self.mtu.confirmed();
            let before = self.recv.window();
            let n = self.recv.read(buf);
            // The peer may be stalled on our full buffer: tell it there is
            // room again.
            if before < 4 * mss && self.recv.window() >= 4 * mss {
                self.need_ack = true;
            }
            return Ok(Some(n));
        }
        if self.recv.at_eof() {
            return Ok(Some(0));
        }
        match self.state {
            State::Closed(CloseReason::Finished) => Ok(Some(0)),
            State::Closed(r) => Err(r),
            _ => Ok(None),
        }
    }

    pub fn readable(&self) -> usize {
        self.recv.readable()
    }

    /// Queues bytes to send; returns how many fit (0: the buffer is full).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, CloseReason> {
        match self.state {
            State::Closed(r) => Err(r),
            _ if self.local_closed => Err(CloseReason::Finished),
            _ => Ok(self.send.write(data)),
        }
    }

    /// Closes our side: a FIN follows the queued bytes.
    pub fn close(&mut self) {
        self.local_closed = true;
    }

    // ----- network side -----

    pub fn handle_packet(&mut self, now: Instant, now_us: u32, p: &Packet<'_>) {
        let h = &p.header;
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        if h.kind == Kind::Reset {
            // A RESET acks the packet that provoked it (libtorrent and
            // libutp put that packet's seq_nr in ack_nr): one that names
            // nothing we sent recently is forged or stale, like TCP's
            // in-window check for RST (RFC 5961).
            if !self.acks_recent(h.ack_nr) {
                return;
            }
            self.fail(if self.state == State::SynSent {
                CloseReason::Refused
            } else {
                CloseReason::Reset
            });
            return;
        }
        if h.kind == Kind::Syn {
            // A resent SYN: our STATE was lost; answer again.
            if self.state == State::SynRecv || self.state == State::Connected {
                self.need_ack = true;
            }
            return;
        }
        // An ack for a packet we never sent is not from our peer.
        let last_sent = self.seq_nr.prev();
        if h.ack_nr.after(last_sent) {
            return;
        }
        // Nor is one whose sequence number is far from the peer's stream:
        // its data never runs more than MAX_AHEAD past our ack (we keep
        // nothing further), and a resend that far behind is a duplicate.
        // Ignore it before its timestamp reaches the delay we echo (the
        // peer's LEDBAT steers by it) or its window reaches ours.
        if self.state != State::SynSent
            && h.seq_nr.since(self.recv.ack_nr()).unsigned_abs() as usize > MAX_AHEAD
        {
            return;
        }
        self.reply_micro = now_us.wrapping_sub(h.timestamp_us);
        self.peer_window = h.wnd_size;
        self.ledbat.delay_sample(now, h.timestamp_diff_us);

        match self.state {
            State::SynSent => {
                if h.kind != Kind::State || h.ack_nr != Seq(1) {
                    return;
                }
                // STATE carries the next sequence number the peer will use.
                self.recv = RecvQueue::new(h.seq_nr.prev(), self.cfg.recv_buffer);
                self.peer_reads(p.max_datagram);
                if self.syn_sent == 1 {
                    self.rtt.sample(now.saturating_duration_since(self.created));
                }
                self.rtt.acked();
                self.rto_at = None;
                self.state = State::Connected;
                self.changes.connected = true;
                self.changes.writable = true;
                // Ack at once: the acceptor hands the connection to its
                // application only when we answer, even if we have
                // nothing to say yet.
                self.need_ack = true;
            }
            State::SynRecv => {
                // The initiator's next packet acks our STATE exactly; a
                // guessed one rarely does (SYN floods with follow-ups).
                if h.ack_nr != self.seq_nr.prev() {
                    return;
                }
                self.rto_at = None;
                self.rtt.acked();
                self.state = State::Connected;
                self.changes.connected = true;
                self.changes.writable = true;
            }
            State::Connected => {
                // The acceptor resent its answer to our SYN: our ack was
                // lost. Ack again if nothing of ours has carried one since.
                if h.kind == Kind::State && h.ack_nr == Seq(1) && self.seq_nr == Seq(2) {
                    self.need_ack = true;
                }
            }
            State::Closed(_) => {}
        }

        self.process_ack(
            now,
            h,
            p.sack,
            p.payload.is_empty() && h.kind == Kind::State,
        );

        if matches!(h.kind, Kind::Data | Kind::Fin) {
            let had = self.recv.readable();
            match self.recv.arrive(h.seq_nr, p.payload, h.kind == Kind::Fin) {
                Arrival::Dropped => {}
                _ => self.need_ack = true,
            }
            if self.recv.readable() > had || self.recv.complete() {
                self.changes.readable = true;
            }
        }
        self.check_finished();
    }

    fn process_ack(&mut self, now: Instant, h: &Header, sack: Option<&[u8]>, bare_ack: bool) {
        let window_before = self.send.in_flight();
        let mut acked = Acked::default();
        let mut rtt_from = None;
        let mut progress = false;
        // Cumulative: everything from the oldest unacked up to ack_nr.
        while let Some(oldest) = self.send.oldest() {
            let seq = oldest.seq;
            if seq.after(h.ack_nr) {
                break;
            }
            if let Some(p) = self.send.ack(seq, &mut acked, &mut rtt_from) {
                if p.probe {
                    let size = p.len as usize + HEADER_LEN;
                    self.mtu.probe_acked(size);
                }
                if Some(p.seq) == self.partial_in_flight {
                    self.partial_in_flight = None;
                }
            }
            self.send.pop_acked();
            progress = true;
        }
        if let Some(t) = rtt_from.take() {
            self.rtt.sample(now.saturating_duration_since(t));
        }

        // Three duplicate bare acks: the packet after ack_nr is lost.
        if bare_ack && !progress && self.last_peer_ack == Some(h.ack_nr) && !self.send.all_acked() {
            self.duplicate_acks += 1;
            if self.duplicate_acks == 3 {
                let next = h.ack_nr.next();
                if self.send.get(next).is_some_and(|p| p.transmissions == 1) {
                    self.declare_lost(now, next);
                }
            }
        } else if progress {
            self.duplicate_acks = 0;
        }
        self.last_peer_ack = Some(h.ack_nr);

        if let Some(mask) = sack {
            self.process_sack(now, h.ack_nr, mask, &mut acked, &mut rtt_from);
            if let Some(t) = rtt_from {
                self.rtt.sample(now.saturating_duration_since(t));
            }
        }

        if acked.packets > 0 {
            self.rtt.acked();
            let mss = self.mtu.confirmed() as u32;
            let window = self.ledbat.window().min(self.peer_window);
            self.ledbat.on_ack(
                now,
                self.rtt.smoothed(),
                acked.bytes,
                window_before + mss >= window,
            );
            self.changes.writable = true;
        }
        // Our FIN counts as acked only with everything before it: a
        // selective ack may cover it while data is still missing.
        if self.fin_sent && self.send.all_acked() {
            self.fin_acked = true;
        }
        if self.send.in_flight() == 0 && !self.send.has_lost() {
            self.rto_at = None;
        } else if acked.packets > 0 {
            self.rto_at = Some(now + self.rtt.timeout());
        }
    }

    /// Marks what the selective ack covers, then declares lost every packet
    /// with three or more acked packets after it (BEP 29 "packet loss").
    fn process_sack(
        &mut self,
        now: Instant,
        ack_nr: Seq,
        mask: &[u8],
        acked: &mut Acked,
        rtt_from: &mut Option<Instant>,
    ) {
        let Some(newest) = self.send.newest() else {
            return;
        };
        for (byte_i, byte) in mask.iter().enumerate() {
            if *byte == 0 {
                continue;
            }
            for bit in 0..8 {
                if byte & (1 << bit) == 0 {
                    continue;
                }
                let seq = ack_nr.plus(2 + (byte_i * 8 + bit) as u16);
                if seq.after(newest) {
                    break;
                }
                if let Some(p) = self.send.ack(seq, acked, rtt_from) {
                    if p.probe {
                        let size = p.len as usize + HEADER_LEN;
                        self.mtu.probe_acked(size);
                    }
                    if Some(p.seq) == self.partial_in_flight {
                        self.partial_in_flight = None;
                    }
                }
            }
        }
        let mut acked_after = 0u32;
        // The three latest send times of acked packets, latest first.
        let mut latest_acked = [None::<Instant>; 3];
        let mut lost = Vec::new();
        for p in self.send.flight().iter().rev() {
            if p.acked {
                acked_after += 1;
                let mut t = Some(p.sent_at);
                for slot in &mut latest_acked {
                    if t > *slot {
                        std::mem::swap(slot, &mut t);
                    }
                }
            } else if acked_after >= 3 && p.in_flight && p.transmissions == 1 {
                lost.push(p.seq);
            }
        }
        // A resent packet is lost again once three packets sent after it
        // were acked. Without this only the retransmission timer finds it,
        // and only once the peer's receive buffer, full of what came after
        // the hole, stops the flow (a far path stalled ~7 s for it, then
        // started again from the minimum window).
        lost.reverse();
        if let Some(third) = latest_acked[2] {
            let again =
                self.send.flight().iter().filter(|p| {
                    !p.acked && p.in_flight && p.transmissions > 1 && p.sent_at < third
                });
            lost.extend(again.map(|p| p.seq));
        }
        for seq in lost {
            self.declare_lost(now, seq);
        }
    }

    /// Is `ack` one of our last packets: from the oldest unacked (or a
    /// window's worth back) up to the next sequence number?
    fn acks_recent(&self, ack: Seq) -> bool {
        let span = self.send.flight().len() as i16 + 64;
        let back = self.seq_nr.since(ack);
        (0..=span).contains(&back)
    }

    fn declare_lost(&mut self, now: Instant, seq: Seq) {
        let Some(p) = self.send.mark_lost(seq) else {
            return;
        };
        let (probe, size, seq) = (p.probe, p.len as usize + HEADER_LEN, p.seq);
        // One cut per window of packets, as TCP does; a resent packet lost
        // again is a new event if it was resent after the last cut.
        let new_event = if p.transmissions > 1 {
            self.last_cut.is_none_or(|cut| p.sent_at > cut)
        } else {
            !self.loss_fence.after(seq)
        };
        if probe {
            self.mtu.probe_lost(size);
        } else if new_event {
            self.ledbat.on_loss(now);
            self.loss_fence = self.seq_nr;
            self.last_cut = Some(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed(_) => None,
            State::SynRecv => {
                let expiry = self.created + self.cfg.half_open;
                Some(self.rto_at.map_or(expiry, |t| t.min(expiry)))
            }
            _ => {
                let keepalive =
                    (self.state == State::Connected).then(|| self.last_sent + self.cfg.keepalive);
                match (self.rto_at, keepalive) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed(_) => {}
            State::SynRecv => {
                if now >= self.created + self.cfg.half_open {
                    self.fail(CloseReason::TimedOut);
                } else if self.rto_at.is_some_and(|t| now >= t) {
                    // Our answer to the SYN may have been lost: say it again.
                    self.rtt.timed_out();
                    self.rto_at = None;
                    self.need_ack = true;
                }
            }
            State::SynSent => {
                if self.rto_at.is_some_and(|t| now >= t) {
                    if self.syn_sent >= self.cfg.syn_tries {
                        self.fail(CloseReason::TimedOut);
                    } else {
                        // The next poll resends the SYN, a second later
                        // (no back-off: a dead peer should fall back to
                        // TCP within seconds).
                        self.rto_at = None;
                    }
                }
            }
            State::Connected => {
                let zero_window_probe = self.send.in_flight() == 0 && !self.send.has_lost();
                if zero_window_probe && self.rto_at.is_some_and(|t| now >= t) {
                    // Nothing in flight, only the peer's closed window:
                    // let one packet through to learn whether it opened.
                    self.peer_window = self.peer_window.max(self.mtu.confirmed() as u32);
                    self.rto_at = None;
                } else if self.rto_at.is_some_and(|t| now >= t) {
                    if self.rtt.timed_out() > self.cfg.max_timeouts {
                        self.fail(CloseReason::TimedOut);
                        return;
                    }
                    // Everything in flight is presumed lost; start again
                    // from one packet's worth of window.
                    let flight: Vec<(Seq, bool, u32)> = self.send.in_flight_seqs().collect();
                    for (seq, probe, size) in flight {
                        self.send.mark_lost(seq);
                        if probe {
                            self.mtu.probe_lost(size as usize);
                        }
                    }
                    self.ledbat.on_timeout(now);
                    self.loss_fence = self.seq_nr;
                    self.last_cut = Some(now);
                    // A zero window the peer never reopened: probe it.
                    if (self.peer_window as usize) < self.mtu.confirmed() {
                        self.peer_window = self.mtu.confirmed() as u32;
                    }
                    self.rto_at = Some(now + self.rtt.timeout());
                }
                if now >= self.last_sent + self.cfg.keepalive {
                    self.need_ack = true;
                }
            }
        }
    }

    fn fail(&mut self, reason: CloseReason) {
        self.state = State::Closed(reason);
        self.changes.closed = Some(reason);
        self.changes.readable = true;
        self.changes.writable = true;
        self.rto_at = None;
    }

    fn check_finished(&mut self) {
        if self.state == State::Connected && self.fin_acked && self.recv.complete() {
            self.state = State::Closed(CloseReason::Finished);
            self.changes.closed = Some(CloseReason::Finished);
            self.changes.readable = true;
        }
    }

    fn header(&self, kind: Kind, seq_nr: Seq, now_us: u32) -> Header {
        Header {
            kind,
            conn_id: if kind == Kind::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            timestamp_us: now_us,
            timestamp_diff_us: self.reply_micro,
            wnd_size: self.recv.window() as u32,
            seq_nr,
            ack_nr: self.recv.ack_nr(),
        }
    }

    /// Writes the next datagram for the peer into `out`; false when there
    /// is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, now_us: u32, out: &mut Vec<u8>) -> bool {
        self.probing = false;
        match self.state {
            State::Closed(_) => false,
            State::SynSent => {
                if self.rto_at.is_some() {
                    return false;
                }
                self.syn_sent += 1;
                self.handshake(Kind::Syn, Seq(1), now, now_us, out);
                true
            }
            State::SynRecv => {
                if !self.need_ack {
                    return false;
                }
                self.handshake(Kind::State, self.seq_nr, now, now_us, out);
                true
            }
            State::Connected => self.transmit_connected(now, now_us, out),
        }
    }

    /// The SYN, or the STATE that answers it: they say how large a
    /// datagram we read, and are resent until answered.
    fn handshake(&mut self, kind: Kind, seq: Seq, now: Instant, now_us: u32, out: &mut Vec<u8>) {
        self.header(kind, seq, now_us)
            .encode_with(None, self.cfg.max_datagram, out);
        self.sent(now);
        self.rto_at = Some(now + self.rtt.timeout());
    }

    fn transmit_connected(&mut self, now: Instant, now_us: u32, out: &mut Vec<u8>) -> bool {
        let mut sack_buf = [0u8; MAX_SACK_BYTES];
        let sack_len = self.recv.sack(&mut sack_buf);
        let sack = (sack_len > 0).then_some(&sack_buf[..sack_len]);
        let window = self.ledbat.window().min(self.peer_window);
        let in_flight = self.send.in_flight();
        let peer_window = self.peer_window;
        // One packet may always go out when nothing is in flight, if the
        // peer has room for it (a probe may be larger than the window).
        let room =
            |size: u32| in_flight + size <= window || (in_flight == 0 && size <= peer_window);

        // Resends first: they hold up the reader on the other side.
        if let Some(size) = self.send.next_lost_size() {
            if room(size) {
                let p = self.send.resend_next(now).expect("a lost packet").clone();
                let kind = if p.fin { Kind::Fin } else { Kind::Data };
                // The packet keeps its size; skip the sack if both would
                // not fit in the confirmed packet size.
                let fits = Header::len_with(sack_len) + p.len as usize
                    <= self.mtu.confirmed().max(p.len as usize + HEADER_LEN);
                self.header(kind, p.seq, now_us)
                    .encode(if fits { sack } else { None }, out);
                self.send.payload(&p, out);
                if self.rto_at.is_none() {
                    self.rto_at = Some(now + self.rtt.timeout());
                }
                self.sent(now);
                return true;
            }
        }

        let unsent = self.send.unsent();
        if unsent > 0 && !self.send.has_lost() {
            let header_len = Header::len_with(sack_len);
            let mss = self.mtu.confirmed().saturating_sub(header_len).max(1);
            let probe = self
                .mtu
                .next_probe()
                .filter(|size| unsent + header_len >= *size && room(*size as u32));
            let len = match probe {
                Some(size) => size - header_len,
                None => unsent.min(mss),
            };
            let nagle_waits = len < mss && self.partial_in_flight.is_some();
            let fits = room((len + HEADER_LEN) as u32);
            if !fits && in_flight == 0 && self.rto_at.is_none() {
                // Only the peer's window holds us: probe it after a timeout.
                self.rto_at = Some(now + self.rtt.timeout());
            }
            if !nagle_waits && fits {
                let seq = self.seq_nr;
                self.seq_nr = seq.next();
                self.header(Kind::Data, seq, now_us).encode(sack, out);
                let p = self
                    .send
                    .push(seq, len, false, probe.is_some(), now)
                    .clone();
                self.send.payload(&p, out);
                if let Some(size) = probe {
                    self.mtu.probe_sent(size);
                    self.probing = true;
                }
                if len < mss {
                    self.partial_in_flight = Some(seq);
                }
                if self.rto_at.is_none() {
                    self.rto_at = Some(now + self.rtt.timeout());
                }
                self.sent(now);
                return true;
            }
        }

        if self.local_closed && !self.fin_sent && self.send.unsent() == 0 && !self.send.has_lost() {
            let seq = self.seq_nr;
            self.seq_nr = seq.next();
            self.fin_sent = true;
            self.header(Kind::Fin, seq, now_us).encode(sack, out);
            self.send.push(seq, 0, true, false, now);
            if self.rto_at.is_none() {
                self.rto_at = Some(now + self.rtt.timeout());
            }
            self.sent(now);
            return true;
        }

        if self.need_ack {
            self.header(Kind::State, self.seq_nr, now_us)
                .encode(sack, out);
            self.sent(now);
            return true;
        }
        false
    }

    /// Whether the datagram [`Self::poll_transmit`] wrote last is an MTU
    /// probe sent for the first time: it should go with Don't Fragment,
    /// so a path too small for it drops it rather than fragmenting it.
    /// (Its resends must not: uTP never splits a packet.)
    pub fn probing_mtu(&self) -> bool {
        self.probing
    }

    fn sent(&mut self, now: Instant) {
        self.need_ack = false;
        self.last_sent = now;
    }
}

/// A snapshot of a connection's transport state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionStats {
    pub rtt: Option<Duration>,
    /// The congestion window in bytes.
    pub window: u32,
    pub in_flight: u32,
    pub queuing_delay: Option<Duration>,
    /// The confirmed UDP payload size.
    pub packet_size: usize,
    pub peer_window: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sends `len` bytes to B over a link that takes `step` each way and
    /// drops A's first `drops` transmissions of the data packet `victim`
    /// packets into the stream. Returns when each transmission of the
    /// victim went out (ms since the start) and the bytes B read.
    fn transfer(len: usize, victim: u16, drops: u32) -> (Vec<u64>, usize) {
        let t0 = Instant::now();
        let step = Duration::from_millis(25);
        let (a_addr, b_addr): (SocketAddr, SocketAddr) =
            ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        let cfg = ConnectionConfig::default();
        let mtu = || MtuSearch::new(1000, 1000);
        let mut a = Connection::connect(t0, cfg.clone(), b_addr, 100, mtu(), 0);
        let mut b: Option<Connection> = None;
        let mut now = t0;
        let us = |now: Instant| now.duration_since(t0).as_micros() as u32;
        let mut out = Vec::new();
        let mut written = 0;
        let mut read = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let mut victim_seq = None;
        let mut sent_at = Vec::new();
        while now < t0 + Duration::from_secs(30) && read < len {
            written += a.write(&vec![7u8; len - written]).unwrap();
            let mut to_b = Vec::new();
            while a.poll_transmit(now, us(now), &mut out) {
                let p = Packet::parse(&out).unwrap();
                if p.header.kind == Kind::Data {
                    let seq = *victim_seq.get_or_insert(p.header.seq_nr.plus(victim));
                    if p.header.seq_nr == seq {
                        sent_at.push(now.duration_since(t0).as_millis() as u64);
                        if sent_at.len() as u32 <= drops {
                            continue;
                        }
                    }
                }
                to_b.push(out.clone());
            }
            now += step;
            for bytes in &to_b {
                let p = Packet::parse(bytes).unwrap();
                match b.as_mut() {
                    Some(b) => b.handle_packet(now, us(now), &p),
                    None => {
                        b = Some(Connection::accept(
                            now,
                            cfg.clone(),
                            a_addr,
                            &p,
                            Seq(5000),
                            us(now),
                            mtu(),
                            0,
                        ))
                    }
                }
            }
            let Some(b) = b.as_mut() else { continue };
            while let Ok(Some(n)) = b.read(&mut buf) {
                if n == 0 {
                    break;
                }
                read += n;
            }
            let mut to_a = Vec::new();
            while b.poll_transmit(now, us(now), &mut out) {
                to_a.push(out.clone());
            }
            now += step;
            for bytes in &to_a {
                a.handle_packet(now, us(now), &Packet::parse(bytes).unwrap());
            }
            for c in [&mut a, b] {
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    c.handle_timeout(now);
                }
            }
        }
        (sent_at, read)
    }

    #[test]
    fn a_resent_packet_lost_again_is_found_by_the_acks_after_it() {
        // The packet is lost, found lost by the selective acks after it and
        // resent; the resend is lost too. The acks of packets sent after
        // the resend find it (a round trip later), not the retransmission
        // timer, which the flow of acks keeps pushing back until the
        // receiver's buffer is full of what came after the hole.
        let (sent_at, read) = transfer(400_000, 20, 2);
        assert_eq!(read, 400_000);
        assert_eq!(sent_at.len(), 3, "sent at {sent_at:?} ms");
        let again = sent_at[2] - sent_at[1];
        assert!(again <= 150, "resent again {again} ms after (RTT 50 ms)");
    }
}
