//! Every peer address we know of: which sources named it, when to dial it
//! next, whether it wants an encrypted handshake, whether it was a seed.
//! Bans live here too, so a banned address is never dialled again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::source::{PeerSource, SourceSet};

/// Peer addresses remembered for dialling.
pub const MAX_KNOWN_PEERS: usize = 2000;
/// Peer exchange may fill at most this share of the table: a peer cannot
/// flood us with addresses.
const MAX_FROM_PEX: usize = MAX_KNOWN_PEERS / 4;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Candidate {
    /// The source that named it first: the one a connection is counted under.
    pub first: PeerSource,
    pub sources: SourceSet,
    next_dial: Instant,
    backoff: Duration,
    /// It closed our plain handshake: the next dial uses MSE/PE (and a
    /// failed MSE dial goes back to plain).
    pub wants_mse: bool,
    /// It had every piece when we last saw it: a seed does not dial it.
    pub was_seed: bool,
    /// Which transport to dial first.
    pub dial_first: crate::io::DialFirst,
}

/// What to dial: the address, the source it counts under, and whether to
/// open with an encrypted handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    pub addr: SocketAddr,
    pub source: PeerSource,
    pub encrypted: bool,
    pub first: crate::io::DialFirst,
}

#[derive(Debug, Default)]
pub struct PeerTable {
    // Ordered: the same inputs dial in the same order (the simulator replays).
    candidates: BTreeMap<SocketAddr, Candidate>,
    connecting: HashSet<SocketAddr>,
    /// Addresses with connections up, and how many (a peer can be
    /// connected twice for a moment: both sides dialled): not dialled.
    connected: HashMap<SocketAddr, u32>,
    /// The idle candidates (not dialling, not connected, not banned) by
    /// their next dial time: the next deadline and the due ones without a
    /// scan of the table (it is asked after every input).
    schedule: BTreeSet<(Instant, SocketAddr)>,
    banned: HashSet<IpAddr>,
    from_pex: usize,
    /// Our own listen address: never a candidate.
    listen: Option<SocketAddr>,
}

impl PeerTable {
    pub fn new(listen: Option<SocketAddr>) -> Self {
        Self {
            listen,
            ..Self::default()
        }
    }

    /// A source named `addr`. False when it is not kept (ours, banned,
    /// port 0, or the table or PEX's share of it is full).
    pub fn add(&mut self, now: Instant, addr: SocketAddr, source: PeerSource) -> bool {
        if Some(addr) == self.listen || addr.port() == 0 || self.banned.contains(&addr.ip()) {
            return false;
        }
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.sources.insert(source);
            return true;
        }
        if self.candidates.len() >= MAX_KNOWN_PEERS
            || (source == PeerSource::Pex && self.from_pex >= MAX_FROM_PEX)
        {
            return false;
        }
        if source == PeerSource::Pex {
            self.from_pex += 1;
        }
        self.candidates.insert(
            addr,
            Candidate {
                first: source,
                sources: SourceSet::of(source),
                next_dial: now,
                backoff: FIRST_BACKOFF,
                wants_mse: false,
                was_seed: false,
                dial_first: crate::io::DialFirst::Either,
            },
        );
        self.schedule.insert((now, addr));
        true
    }

    /// Put `addr` back on the schedule if it is idle.
    fn reschedule(&mut self, addr: SocketAddr) {
        let idle = !self.connecting.contains(&addr)
            && !self.connected.contains_key(&addr)
            && !self.banned.contains(&addr.ip());
        if let (true, Some(c)) = (idle, self.candidates.get(&addr)) {
            self.schedule.insert((c.next_dial, addr));
        }
    }

    /// Take `addr` off the schedule.
    fn unschedule(&mut self, addr: SocketAddr) {
        if let Some(c) = self.candidates.get(&addr) {
            self.schedule.remove(&(c.next_dial, addr));
        }
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<&Candidate> {
        self.candidates.get(addr)
    }

    /// Idle candidates in dial order, without known seeds when
    /// `skip_seeds` (a seed has nothing to trade with them).
    fn dialable(&self, skip_seeds: bool) -> impl Iterator<Item = (Instant, SocketAddr)> + '_ {
        self.schedule.iter().copied().filter(move |(_, a)| {
            !skip_seeds || !self.candidates.get(a).is_some_and(|c| c.was_seed)
        })
    }

    /// Idle addresses whose time has come, earliest first.
    pub fn due(&self, now: Instant, skip_seeds: bool) -> Vec<SocketAddr> {
        self.dialable(skip_seeds)
            .take_while(|(t, _)| *t <= now)
            .map(|(_, a)| a)
            .collect()
    }

    /// The earliest dial time of an idle address (for the next timeout).
    pub fn next_dial(&self, skip_seeds: bool) -> Option<Instant> {
        self.dialable(skip_seeds).map(|(t, _)| t).next()
    }

    /// We dial `addr` now: it is half-open until [`Self::connected`] or
    /// [`Self::dial_failed`], and its next dial backs off.
    pub fn start_dial(&mut self, now: Instant, addr: SocketAddr) -> Option<Dial> {
        self.unschedule(addr);
        let c = self.candidates.get_mut(&addr)?;
        c.next_dial = now + c.backoff;
        c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
        self.connecting.insert(addr);
        Some(Dial {
            addr,
            source: c.first,
            encrypted: c.wants_mse,
            first: c.dial_first,
        })
    }

    /// Start up to `room` dials whose time has come, in dial order: each
    /// with the source it counts under and, for a peer that hung up on our
    /// plain handshake, the keys of an encrypted one.
    pub fn dial_due(
        &mut self,
        now: Instant,
        skip_seeds: bool,
        room: usize,
        rng: &mut lodestone_dht::rng::Rng,
    ) -> Vec<crate::io::Action> {
        let due = self.due(now, skip_seeds);
        let mut out = Vec::new();
        for addr in due.into_iter().take(room) {
            let Some(dial) = self.start_dial(now, addr) else {
                continue;
            };
            let encrypt = dial.encrypted.then(|| crate::io::MseKeys {
                private_key: rng.bytes20(),
                pad: vec![0u8; rng.below(64) as usize],
            });
            out.push(crate::io::Action::Dial {
                addr,
                source: dial.source,
                encrypt,
                first: dial.first,
            });
        }
        out
    }

    /// A peer exchange said `addr` speaks uTP.
    pub fn mark_utp(&mut self, addr: SocketAddr) {
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.dial_first = crate::io::DialFirst::Utp;
        }
    }

    pub fn half_open(&self) -> usize {
        self.connecting.len()
    }

    pub fn is_connecting(&self, addr: &SocketAddr) -> bool {
        self.connecting.contains(addr)
    }

    /// A connection to `addr` is up (dialled, or it dialled us).
    pub fn connected(&mut self, addr: SocketAddr) {
        self.unschedule(addr);
        self.connecting.remove(&addr);
        *self.connected.entry(addr).or_default() += 1;
    }

    /// The connection to `addr` closed: it may be dialled again in its time.
    pub fn disconnected(&mut self, addr: SocketAddr) {
        if let Some(n) = self.connected.get_mut(&addr) {
            *n -= 1;
            if *n > 0 {
                return;
            }
            self.connected.remove(&addr);
        }
        self.reschedule(addr);
    }

    /// The dial failed: alternate, plain next time if encryption failed too.
    pub fn dial_failed(&mut self, addr: SocketAddr) {
        self.connecting.remove(&addr);
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.wants_mse = false;
        }
        self.reschedule(addr);
    }

    /// We dialled it (over uTP if `over_utp`) and it hung up before its
    /// handshake: try the other handshake (MSE after plain, plain after
    /// MSE) next time, and once both hung up, the other transport (a peer
    /// that takes no TCP peers may still accept TCP connections and close
    /// them, as libtorrent with incoming TCP off does).
    pub fn closed_before_handshake(&mut self, addr: SocketAddr, over_utp: bool) {
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.wants_mse = !c.wants_mse;
            if !c.wants_mse {
                c.dial_first = if over_utp {
                    crate::io::DialFirst::Tcp
                } else {
                    crate::io::DialFirst::Utp
                };
            }
        }
    }

    /// It had everything: a seed will not dial it again.
    pub fn mark_seed(&mut self, now: Instant, addr: SocketAddr, source: PeerSource) {
        self.add(now, addr, source);
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.was_seed = true;
        }
    }

    pub fn ban(&mut self, ip: IpAddr) {
        self.banned.insert(ip);
        self.schedule.retain(|(_, a)| a.ip() != ip);
    }

    pub fn is_banned(&self, ip: &IpAddr) -> bool {
        self.banned.contains(ip)
    }

    pub fn banned(&self) -> usize {
        self.banned.len()
    }

    /// Distinct addresses `source` named.
    /// Distinct addresses each source named, all sources at once.
    pub(crate) fn found_per_source(&self) -> crate::source::PerSource {
        let mut found = crate::source::PerSource::default();
        for c in self.candidates.values() {
            for s in c.sources.iter() {
                found.add(s);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881))
    }

    #[test]
    fn an_address_keeps_every_source_that_named_it() {
        let now = Instant::now();
        let mut t = PeerTable::new(None);
        assert!(t.add(now, addr(1), PeerSource::Dht));
        assert!(t.add(now, addr(1), PeerSource::Pex));
        assert_eq!(t.len(), 1);
        let c = t.get(&addr(1)).unwrap();
        assert_eq!(c.first, PeerSource::Dht);
        assert!(c.sources.contains(PeerSource::Pex));
        assert_eq!(t.found_per_source().get(PeerSource::Pex), 1);
        assert_eq!(t.found_per_source().get(PeerSource::Tracker), 0);
    }

    #[test]
    fn ours_port_zero_and_banned_are_refused() {
        let now = Instant::now();
        let me = addr(9);
        let mut t = PeerTable::new(Some(me));
        assert!(!t.add(now, me, PeerSource::Dht));
        assert!(!t.add(now, SocketAddr::from(([10, 0, 0, 2], 0)), PeerSource::Dht));
        t.ban(addr(3).ip());
        assert!(!t.add(now, addr(3), PeerSource::Tracker));
        assert!(t.is_empty());
    }

    #[test]
    fn dials_back_off_and_half_open_ones_are_not_due() {
        let t0 = Instant::now();
        let mut t = PeerTable::new(None);
        t.add(t0, addr(1), PeerSource::Dht);
        assert_eq!(t.due(t0, false), vec![addr(1)]);
        let d = t.start_dial(t0, addr(1)).unwrap();
        assert!(!d.encrypted);
        assert!(t.due(t0 + Duration::from_secs(5), false).is_empty());
        t.dial_failed(addr(1));
        // 1 s, then 2 s, 4 s...: the second dial waits 1 s, the third 2 s.
        assert_eq!(t.next_dial(false), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        t.start_dial(t1, addr(1));
        t.dial_failed(addr(1));
        assert_eq!(t.next_dial(false), Some(t1 + Duration::from_secs(2)));
        assert!(t.due(t1 + Duration::from_millis(1999), false).is_empty());
        // Connected peers are not dialled, and their old dial time is no
        // deadline (else a driver would wake at once, for ever).
        t.start_dial(t1 + Duration::from_secs(9), addr(1));
        t.connected(addr(1));
        assert!(t.due(t1 + Duration::from_secs(99), false).is_empty());
        assert_eq!(t.next_dial(false), None);
        t.disconnected(addr(1));
        assert!(t.next_dial(false).is_some());
    }

    #[test]
    fn a_second_connection_closing_does_not_make_the_first_dialable() {
        let now = Instant::now();
        let mut t = PeerTable::new(None);
        t.add(now, addr(1), PeerSource::Dht);
        t.start_dial(now, addr(1));
        t.connected(addr(1));
        // It dialled us too (same address in a simulator, or a twin we drop).
        t.connected(addr(1));
        t.disconnected(addr(1));
        assert_eq!(t.next_dial(false), None, "one connection is still up");
        t.disconnected(addr(1));
        assert!(t.next_dial(false).is_some());
    }

    #[test]
    fn a_peer_that_hangs_up_on_plain_gets_mse_then_plain_again() {
        let now = Instant::now();
        let mut t = PeerTable::new(None);
        t.add(now, addr(1), PeerSource::Tracker);
        t.start_dial(now, addr(1));
        t.connected(addr(1));
        t.disconnected(addr(1));
        t.closed_before_handshake(addr(1), false);
        assert!(t.start_dial(now, addr(1)).unwrap().encrypted);
        t.dial_failed(addr(1));
        assert!(!t.start_dial(now, addr(1)).unwrap().encrypted);
    }

    #[test]
    fn both_handshakes_closed_on_one_transport_try_the_other() {
        use crate::io::DialFirst;
        let now = Instant::now();
        let mut t = PeerTable::new(None);
        t.add(now, addr(1), PeerSource::Tracker);
        let dial = |t: &mut PeerTable, over_utp: bool| {
            let d = t.start_dial(now, addr(1)).unwrap();
            t.connected(addr(1));
            t.disconnected(addr(1));
            t.closed_before_handshake(addr(1), over_utp);
            d
        };
        assert_eq!(
            dial(&mut t, false).first,
            DialFirst::Either,
            "plain over TCP closed"
        );
        let d = dial(&mut t, false);
        assert!(d.encrypted, "then MSE over TCP, closed too");
        let d = t.start_dial(now, addr(1)).unwrap();
        assert_eq!((d.first, d.encrypted), (DialFirst::Utp, false), "then uTP");
        t.dial_failed(addr(1));
        dial(&mut t, true);
        dial(&mut t, true);
        assert_eq!(
            t.start_dial(now, addr(1)).unwrap().first,
            DialFirst::Tcp,
            "and back"
        );
    }

    #[test]
    fn pex_fills_a_quarter_at_most_and_the_table_is_bounded() {
        let now = Instant::now();
        let mut t = PeerTable::new(None);
        let kept = (0..MAX_KNOWN_PEERS as u16)
            .filter(|i| t.add(now, addr(*i), PeerSource::Pex))
            .count();
        assert_eq!(kept, MAX_FROM_PEX);
        for i in 0..(2 * MAX_KNOWN_PEERS) as u16 {
            t.add(now, addr(10_000 + i), PeerSource::Dht);
        }
        assert_eq!(t.len(), MAX_KNOWN_PEERS);
    }

    #[test]
    fn a_seed_skips_known_seeds() {
        let now = Instant::now();
        let mut t = PeerTable::new(None);
        t.mark_seed(now, addr(1), PeerSource::Incoming);
        t.add(now, addr(2), PeerSource::Dht);
        assert_eq!(t.due(now, true), vec![addr(2)]);
        assert_eq!(t.due(now, false), vec![addr(1), addr(2)]);
        assert_eq!(t.next_dial(true), Some(now));
        t.start_dial(now, addr(2));
        assert_eq!(t.next_dial(true), None);
    }
}
