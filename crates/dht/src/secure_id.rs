//! BEP 42: node ids tied to the node's external IP, so that one machine
//! cannot place itself next to any target it likes. The first 21 bits of
//! the id are CRC32-C of the masked IP and 3 random bits (which are also
//! the low bits of the id's last byte).
//!
//! Addresses where the check means nothing (loopback, private, link-local
//! and other local ranges) are exempt: any id is valid there.

use std::net::IpAddr;

use crate::id::NodeId;

const V4_MASK: [u8; 4] = [0x03, 0x0f, 0x3f, 0xff];
const V6_MASK: [u8; 8] = [0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff];

/// CRC32-C (Castagnoli), reflected, as BEP 42 uses.
fn crc32c(bytes: &[u8]) -> u32 {
    const POLY: u32 = 0x82f6_3b78;
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The CRC over the masked address with `r` (3 bits) in the top bits.
fn ip_crc(ip: IpAddr, r: u8) -> u32 {
    let mut buf = [0u8; 8];
    let n = match ip {
        IpAddr::V4(a) => {
            for (i, (o, m)) in a.octets().iter().zip(V4_MASK).enumerate() {
                buf[i] = o & m;
            }
            4
        }
        IpAddr::V6(a) => {
            for (i, (o, m)) in a.octets().iter().zip(V6_MASK).enumerate() {
                buf[i] = o & m;
            }
            8
        }
    };
    buf[0] |= (r & 0x7) << 5;
    crc32c(&buf[..n])
}

/// An id valid for `ip`: 21 bits from the CRC, the rest from `random`
/// (whose last byte's low 3 bits pick `r`).
pub fn secure_id(ip: IpAddr, random: [u8; 20]) -> NodeId {
    let mut id = random;
    let crc = ip_crc(ip, random[19]);
    id[0] = (crc >> 24) as u8;
    id[1] = (crc >> 16) as u8;
    id[2] = ((crc >> 8) as u8 & 0xf8) | (random[2] & 0x07);
    NodeId(id)
}

/// Is `id` valid for a node at `ip`? Always true for exempt addresses.
pub fn is_valid(id: &NodeId, ip: IpAddr) -> bool {
    if is_exempt(ip) {
        return true;
    }
    let crc = ip_crc(ip, id.0[19]);
    id.0[0] == (crc >> 24) as u8
        && id.0[1] == (crc >> 16) as u8
        && id.0[2] & 0xf8 == (crc >> 8) as u8 & 0xf8
}

/// Loopback, private, link-local, shared (CGNAT), unspecified and unique
/// local addresses: nobody outside can verify them, so BEP 42 skips them.
pub fn is_exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped()
                    .is_some_and(|v4| is_exempt(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BEP 42's table: IP, rand, and the first three bytes and last byte
    /// of the example id (the middle is random).
    #[test]
    fn bep42_vectors() {
        let cases = [
            ("124.31.75.21", 1u8, [0x5f, 0xbf, 0xbf]),
            ("21.75.31.124", 86, [0x5a, 0x3c, 0xe9]),
            ("65.23.51.170", 22, [0xa5, 0xd4, 0x32]),
            ("84.124.73.14", 65, [0x1b, 0x03, 0x21]),
            ("43.213.53.83", 90, [0xe5, 0x6f, 0x6c]),
        ];
        for (ip, rand, prefix) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            let mut random = [0u8; 20];
            random[19] = rand;
            // The low 3 bits of byte 2 are random; take the vector's.
            random[2] = prefix[2] & 0x07;
            let id = secure_id(ip, random);
            assert_eq!(id.0[..3], prefix, "{ip}");
            assert_eq!(id.0[19], rand);
            assert!(is_valid(&id, ip));
            let mut other = id;
            other.0[0] ^= 0x80;
            assert!(!is_valid(&other, ip), "{ip}");
            // Another r (low bits of the last byte) needs another prefix.
            let mut other_r = id;
            other_r.0[19] ^= 0x01;
            assert!(!is_valid(&other_r, ip), "{ip}");
        }
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn local_addresses_are_exempt() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_exempt(ip), "{ip}");
            assert!(is_valid(&NodeId([0xaa; 20]), ip));
        }
        for ip in ["8.8.8.8", "2001:4860::1", "100.128.0.1"] {
            assert!(!is_exempt(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn ipv6_ids_verify() {
        let ip: IpAddr = "2001:db8:85a3::8a2e:370:7334".parse().unwrap();
        for r in 0..8u8 {
            let mut random = [0x5a; 20];
            random[19] = r;
            assert!(is_valid(&secure_id(ip, random), ip));
        }
    }
}
