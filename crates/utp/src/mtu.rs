//! Path-MTU discovery by probing, as libtorrent 2.0 does: data goes out at
//! the confirmed floor (548 bytes of UDP payload over IPv4, 1,232 over IPv6)
//! while one probe at a time, sent with don't-fragment, tries the midpoint
//! of what is left; an acked probe raises the floor, a lost one (or a
//! "message too long" from the kernel) lowers the ceiling. A lost probe is
//! not congestion and does not shrink the window.

use std::net::SocketAddr;

/// The UDP payload (bytes after the UDP header) over a 1,500-byte link.
pub fn ethernet_ceiling(addr: SocketAddr) -> u16 {
    if addr.is_ipv4() {
        1500 - 20 - 8
    } else {
        1500 - 40 - 8
    }
}

/// The smallest UDP payload every path carries: 576 (IPv4) or 1,280 (IPv6)
/// minus the IP and UDP headers.
pub fn floor_for(addr: SocketAddr) -> u16 {
    if addr.is_ipv4() {
        576 - 20 - 8
    } else {
        1280 - 40 - 8
    }
}

/// The search stops once the floor is this close to the ceiling.
const CLOSE_ENOUGH: u16 = 16;

#[derive(Clone, Debug)]
pub struct MtuSearch {
    floor: u16,
    ceiling: u16,
    /// The size of the probe in flight, if any.
    probing: Option<u16>,
}

impl MtuSearch {
    pub fn new(floor: u16, ceiling: u16) -> Self {
        let ceiling = ceiling.max(floor);
        MtuSearch {
            floor,
            ceiling,
            probing: None,
        }
    }

    /// The UDP payload size every data packet may use.
    pub fn confirmed(&self) -> usize {
        self.floor as usize
    }

    /// The size of the next probe, if a probe should go out now.
    pub fn next_probe(&self) -> Option<usize> {
        if self.probing.is_some() || self.ceiling - self.floor <= CLOSE_ENOUGH {
            return None;
        }
        Some((self.floor as usize + self.ceiling as usize).div_ceil(2))
    }

    /// The path allows more than the ceiling we started with (the peer said
    /// it reads larger datagrams): search up to `ceiling` instead.
    pub fn raise_ceiling(&mut self, ceiling: u16) {
        self.ceiling = self.ceiling.max(ceiling);
    }

    pub fn probe_sent(&mut self, size: usize) {
        self.probing = Some(size as u16);
    }

    pub fn probe_acked(&mut self, size: usize) {
        self.probing = None;
        self.floor = self.floor.max(size as u16).min(self.ceiling);
    }

    pub fn probe_lost(&mut self, size: usize) {
        self.probing = None;
        let size = size as u16;
        if size > self.floor {
            self.ceiling = (size - 1).max(self.floor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_search_converges_on_the_path_mtu() {
        let path = 1400usize;
        let mut m = MtuSearch::new(548, 1472);
        let mut probes = 0;
        while let Some(size) = m.next_probe() {
            probes += 1;
            m.probe_sent(size);
            assert!(m.next_probe().is_none(), "one probe at a time");
            if size <= path {
                m.probe_acked(size)
            } else {
                m.probe_lost(size)
            }
        }
        assert!(probes <= 7, "{probes} probes");
        assert!(m.confirmed() <= path && m.confirmed() + CLOSE_ENOUGH as usize >= path);
    }
}
