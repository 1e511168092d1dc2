//! Message Stream Encryption (MSE/PE), the receiving side: the obfuscated
//! handshake libtorrent, Transmission and others try first. A sans-IO state
//! machine: bytes in, bytes to send out, and at the end the torrent, the
//! chosen method and the RC4 streams for the rest of the connection.
//!
//! Handshake (A connects to B, we are B):
//!   A→B Ya, PadA            B→A Yb, PadB
//!   A→B HASH('req1', S), HASH('req2', SKEY) ^ HASH('req3', S),
//!       ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//!   B→A ENCRYPT(VC, crypto_select, len(PadD), PadD), then the payload
//! S is the Diffie-Hellman secret, SKEY the info hash, VC eight zero bytes,
//! ENCRYPT RC4 keyed by HASH('keyA'|'keyB', S, SKEY) with 1024 bytes dropped.

use lodestone_core::InfoHash;
use num_bigint::BigUint;
use sha1::{Digest, Sha1};

/// The 768-bit prime of the protocol; the generator is 2.
const P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
pub const KEY_LEN: usize = 96;
const MAX_PAD: usize = 512;
pub const CRYPTO_PLAIN: u32 = 0x01;
pub const CRYPTO_RC4: u32 = 0x02;

/// RC4, only as the protocol needs it.
#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl std::fmt::Debug for Rc4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rc4")
    }
}

impl Rc4 {
    pub fn new(key: &[u8]) -> Self {
        let mut s = [0u8; 256];
        for (i, v) in s.iter_mut().enumerate() {
            *v = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        Self { s, i: 0, j: 0 }
    }

    /// The protocol's stream for `label` ("keyA"/"keyB"), 1024 bytes dropped.
    pub fn for_mse(label: &[u8], secret: &[u8], skey: &InfoHash) -> Self {
        let mut h = Sha1::new();
        h.update(label);
        h.update(secret);
        h.update(skey.0);
        let mut rc4 = Self::new(&h.finalize());
        let mut discard = [0u8; 1024];
        rc4.apply(&mut discard);
        rc4
    }

    pub fn apply(&mut self, data: &mut [u8]) {
        for b in data {
            self.i = self.i.wrapping_add(1);
            self.j = self.j.wrapping_add(self.s[self.i as usize]);
            self.s.swap(self.i as usize, self.j as usize);
            let k =
                self.s[(self.s[self.i as usize].wrapping_add(self.s[self.j as usize])) as usize];
            *b ^= k;
        }
    }
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The shared secret S from the peer's public key, refusing the degenerate
/// keys (0, 1, >= P) that would make S guessable.
fn shared_secret(
    peer_public: &[u8],
    private: &BigUint,
    p: &BigUint,
) -> Result<[u8; KEY_LEN], MseError> {
    let y = BigUint::from_bytes_be(peer_public);
    if y <= BigUint::from(1u32) || y >= *p {
        return Err(MseError::BadKey);
    }
    Ok(to_96(&y.modpow(private, p)))
}

/// Scans `buf` for `marker`, which follows the peer's random padding.
/// Found: drops everything up to and including it. Not yet: drops what
/// cannot start it (the marker may straddle reads) and counts those bytes
/// against the padding limit.
fn sync_on(buf: &mut Vec<u8>, marker: &[u8], scanned: &mut usize) -> Result<bool, MseError> {
    if let Some(at) = buf.windows(marker.len()).position(|w| w == marker) {
        buf.drain(..at + marker.len());
        return Ok(true);
    }
    let dropped = buf.len().saturating_sub(marker.len() - 1);
    *scanned += dropped;
    buf.drain(..dropped);
    if *scanned > MAX_PAD {
        return Err(MseError::NoSync);
    }
    Ok(false)
}

/// The ciphers for the rest of the connection: both RC4 streams, or none
/// when plain text was selected. `rest`, read past the handshake, is
/// decrypted to match.
fn kept_ciphers(
    select: u32,
    mut dec: Rc4,
    enc: Rc4,
    rest: &mut [u8],
) -> (Option<Rc4>, Option<Rc4>) {
    if select == CRYPTO_RC4 {
        dec.apply(rest);
        (Some(dec), Some(enc))
    } else {
        (None, None)
    }
}

fn to_96(n: &BigUint) -> [u8; KEY_LEN] {
    let b = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    out[KEY_LEN - b.len().min(KEY_LEN)..].copy_from_slice(&b[b.len().saturating_sub(KEY_LEN)..]);
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error("no MSE synchronisation marker within the allowed padding")]
    NoSync,
    #[error("the peer asked for a torrent we do not have")]
    UnknownTorrent,
    #[error("bad verification constant")]
    BadVc,
    #[error("padding longer than 512 bytes")]
    PadTooLong,
    #[error("no crypto method we support was offered")]
    NoCommonMethod,
    #[error("peer public key out of range")]
    BadKey,
}

/// How the connection continues after the handshake.
#[derive(Debug)]
pub struct Established {
    pub info_hash: InfoHash,
    /// `Some` when RC4 was chosen: decrypt everything read / encrypt everything written.
    pub decrypt: Option<Rc4>,
    pub encrypt: Option<Rc4>,
    /// Plaintext already received after the handshake (the initial payload
    /// and anything after it), to feed to the BitTorrent session.
    pub initial: Vec<u8>,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for Ya (96 bytes).
    PublicKey,
    /// Looking for HASH('req1', S) in the padding.
    Sync,
    /// After req1: req2^req3 (20), then the encrypted VC header (14).
    Header,
    /// Waiting for PadC and len(IA).
    PadC {
        pad: usize,
    },
    /// Our answer (crypto_select) is sent; waiting for IA.
    Ia {
        len: usize,
        select: u32,
    },
    Done,
}

/// The receiving side of an MSE handshake.
pub struct MseResponder {
    private: BigUint,
    p: BigUint,
    our_public: [u8; KEY_LEN],
    pad_b: Vec<u8>,
    skeys: Vec<InfoHash>,
    allow_plain: bool,
    buf: Vec<u8>,
    stage: Stage,
    secret: [u8; KEY_LEN],
    req1: [u8; 20],
    skey: Option<InfoHash>,
    dec: Option<Rc4>,
    /// Our cipher from crypto_select on, while IA is still to come.
    enc: Option<Rc4>,
    provide: u32,
    /// Bytes of padding scanned while looking for req1.
    scanned: usize,
}

impl MseResponder {
    /// `random`: 20 bytes for our private key and up to 512 of padding,
    /// from the caller's generator. `skeys`: the info hashes we serve.
    pub fn new(
        private_key: [u8; 20],
        pad_b: Vec<u8>,
        skeys: Vec<InfoHash>,
        allow_plain: bool,
    ) -> Self {
        let p = BigUint::parse_bytes(P_HEX.as_bytes(), 16).unwrap_or_default();
        let private = BigUint::from_bytes_be(&private_key);
        let our_public = to_96(&BigUint::from(2u32).modpow(&private, &p));
        let mut pad_b = pad_b;
        pad_b.truncate(MAX_PAD);
        Self {
            private,
            p,
            our_public,
            pad_b,
            skeys,
            allow_plain,
            buf: Vec::new(),
            stage: Stage::PublicKey,
            secret: [0; KEY_LEN],
            req1: [0; 20],
            skey: None,
            dec: None,
            enc: None,
            provide: 0,
            scanned: 0,
        }
    }

    /// Feed received bytes. Returns bytes to send (possibly none), and the
    /// result once the handshake is complete.
    pub fn handle(&mut self, data: &[u8]) -> Result<(Vec<u8>, Option<Established>), MseError> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            match self.stage {
                Stage::PublicKey => {
                    if self.buf.len() < KEY_LEN {
                        return Ok((out, None));
                    }
                    self.secret = shared_secret(&self.buf[..KEY_LEN], &self.private, &self.p)?;
                    self.req1 = hash(&[b"req1", &self.secret]);
                    self.buf.drain(..KEY_LEN);
                    out.extend_from_slice(&self.our_public);
                    out.extend_from_slice(&self.pad_b);
                    self.stage = Stage::Sync;
                }
                Stage::Sync => {
                    if !sync_on(&mut self.buf, &self.req1, &mut self.scanned)? {
                        return Ok((out, None));
                    }
                    self.stage = Stage::Header;
                }
                Stage::Header => {
                    if self.buf.len() < 20 + 14 {
                        return Ok((out, None));
                    }
                    let req3 = hash(&[b"req3", &self.secret]);
                    let mut req2 = [0u8; 20];
                    for i in 0..20 {
                        req2[i] = self.buf[i] ^ req3[i];
                    }
                    let skey = self
                        .skeys
                        .iter()
                        .find(|ih| hash(&[b"req2", &ih.0]) == req2)
                        .copied()
                        .ok_or(MseError::UnknownTorrent)?;
                    self.skey = Some(skey);
                    let mut dec = Rc4::for_mse(b"keyA", &self.secret, &skey);
                    let mut head = [0u8; 14];
                    head.copy_from_slice(&self.buf[20..34]);
                    dec.apply(&mut head);
                    if head[..8] != [0u8; 8] {
                        return Err(MseError::BadVc);
                    }
                    self.provide = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
                    let pad = usize::from(u16::from_be_bytes([head[12], head[13]]));
                    if pad > MAX_PAD {
                        return Err(MseError::PadTooLong);
                    }
                    self.buf.drain(..34);
                    self.dec = Some(dec);
                    self.stage = Stage::PadC { pad };
                }
                Stage::PadC { pad } => {
                    if self.buf.len() < pad + 2 {
                        return Ok((out, None));
                    }
                    let (Some(skey), Some(dec)) = (self.skey, self.dec.as_mut()) else {
                        return Err(MseError::BadVc);
                    };
                    let mut chunk: Vec<u8> = self.buf.drain(..pad + 2).collect();
                    dec.apply(&mut chunk);
                    let len = usize::from(u16::from_be_bytes([chunk[pad], chunk[pad + 1]]));
                    // Plain text when offered and allowed: no cipher cost after the handshake.
                    let select = if self.allow_plain && self.provide & CRYPTO_PLAIN != 0 {
                        CRYPTO_PLAIN
                    } else if self.provide & CRYPTO_RC4 != 0 {
                        CRYPTO_RC4
                    } else {
                        return Err(MseError::NoCommonMethod);
                    };
                    // Answer now, not once IA is in: a peer that writes IA
                    // separately (libtorrent does) has it held back by Nagle
                    // until we send something, a delayed ACK (40 ms) later.
                    let mut enc = Rc4::for_mse(b"keyB", &self.secret, &skey);
                    let mut reply = [0u8; 14];
                    reply[8..12].copy_from_slice(&select.to_be_bytes());
                    enc.apply(&mut reply);
                    out.extend_from_slice(&reply);
                    self.enc = Some(enc);
                    self.stage = Stage::Ia { len, select };
                }
                Stage::Ia { len, select } => {
                    if self.buf.len() < len {
                        return Ok((out, None));
                    }
                    let (Some(skey), Some(mut dec), Some(enc)) =
                        (self.skey, self.dec.take(), self.enc.take())
                    else {
                        return Err(MseError::BadVc);
                    };
                    self.stage = Stage::Done;
                    let mut ia: Vec<u8> = self.buf.drain(..len).collect();
                    dec.apply(&mut ia);
                    let mut rest = std::mem::take(&mut self.buf);
                    let (decrypt, encrypt) = kept_ciphers(select, dec, enc, &mut rest);
                    ia.extend_from_slice(&rest);
                    return Ok((
                        out,
                        Some(Established {
                            info_hash: skey,
                            decrypt,
                            encrypt,
                            initial: ia,
                        }),
                    ));
                }
                Stage::Done => return Ok((out, None)),
            }
        }
    }
}

/// The initiating side of an MSE handshake (we dial the peer).
pub struct MseInitiator {
    private: BigUint,
    p: BigUint,
    skey: InfoHash,
    ia: Vec<u8>,
    provide: u32,
    buf: Vec<u8>,
    stage: InitStage,
    secret: [u8; KEY_LEN],
    dec: Option<Rc4>,
    enc: Option<Rc4>,
    /// RC4(keyB) of the verification constant: what to look for in PadB.
    vc_marker: [u8; 8],
    scanned: usize,
}

#[derive(Debug)]
enum InitStage {
    PublicKey,
    Sync,
    Select,
    PadD { pad: usize, select: u32 },
    Done,
}

impl MseInitiator {
    /// Start: returns the initiator and the first bytes to send (Ya, PadA).
    /// `ia` is the payload to send inside the handshake (our BitTorrent
    /// handshake); `provide` the methods we accept.
    pub fn new(
        private_key: [u8; 20],
        pad_a: Vec<u8>,
        skey: InfoHash,
        ia: Vec<u8>,
        provide: u32,
    ) -> (Self, Vec<u8>) {
        let p = BigUint::parse_bytes(P_HEX.as_bytes(), 16).unwrap_or_default();
        let private = BigUint::from_bytes_be(&private_key);
        let ya = to_96(&BigUint::from(2u32).modpow(&private, &p));
        let mut first = ya.to_vec();
        first.extend(pad_a.iter().take(MAX_PAD));
        (
            Self {
                private,
                p,
                skey,
                ia,
                provide,
                buf: Vec::new(),
                stage: InitStage::PublicKey,
                secret: [0; KEY_LEN],
                dec: None,
                enc: None,
                vc_marker: [0; 8],
                scanned: 0,
            },
            first,
        )
    }

    pub fn handle(&mut self, data: &[u8]) -> Result<(Vec<u8>, Option<Established>), MseError> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            match self.stage {
                InitStage::PublicKey => {
                    if self.buf.len() < KEY_LEN {
                        return Ok((out, None));
                    }
                    self.secret = shared_secret(&self.buf[..KEY_LEN], &self.private, &self.p)?;
                    self.buf.drain(..KEY_LEN);
                    let req3 = hash(&[b"req3", &self.secret]);
                    let req2 = hash(&[b"req2", &self.skey.0]);
                    out.extend_from_slice(&hash(&[b"req1", &self.secret]));
                    out.extend((0..20).map(|i| req2[i] ^ req3[i]));
                    let mut enc = Rc4::for_mse(b"keyA", &self.secret, &self.skey);
                    let mut body = vec![0u8; 8];
                    body.extend_from_slice(&self.provide.to_be_bytes());
                    body.extend_from_slice(&0u16.to_be_bytes());
                    body.extend_from_slice(&(self.ia.len() as u16).to_be_bytes());
                    body.extend_from_slice(&self.ia);
                    enc.apply(&mut body);
                    out.extend_from_slice(&body);
                    self.enc = Some(enc);
                    let mut marker_stream = Rc4::for_mse(b"keyB", &self.secret, &self.skey);
                    let mut marker = [0u8; 8];
                    marker_stream.apply(&mut marker);
                    self.vc_marker = marker;
                    self.stage = InitStage::Sync;
                }
                InitStage::Sync => {
                    if !sync_on(&mut self.buf, &self.vc_marker, &mut self.scanned)? {
                        return Ok((out, None));
                    }
                    // The stream is positioned right after VC.
                    let mut dec = Rc4::for_mse(b"keyB", &self.secret, &self.skey);
                    let mut vc = [0u8; 8];
                    dec.apply(&mut vc);
                    self.dec = Some(dec);
                    self.stage = InitStage::Select;
                }
                InitStage::Select => {
                    if self.buf.len() < 6 {
                        return Ok((out, None));
                    }
                    let Some(dec) = self.dec.as_mut() else {
                        return Err(MseError::BadVc);
                    };
                    let mut head: Vec<u8> = self.buf.drain(..6).collect();
                    dec.apply(&mut head);
                    let select = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                    if select & self.provide == 0 || select.count_ones() != 1 {
                        return Err(MseError::NoCommonMethod);
                    }
                    let pad = usize::from(u16::from_be_bytes([head[4], head[5]]));
                    if pad > MAX_PAD {
                        return Err(MseError::PadTooLong);
                    }
                    self.stage = InitStage::PadD { pad, select };
                }
                InitStage::PadD { pad, select } => {
                    if self.buf.len() < pad {
                        return Ok((out, None));
                    }
                    let (Some(mut dec), Some(enc)) = (self.dec.take(), self.enc.take()) else {
                        return Err(MseError::BadVc);
                    };
                    let mut skip: Vec<u8> = self.buf.drain(..pad).collect();
                    dec.apply(&mut skip);
                    let mut rest = std::mem::take(&mut self.buf);
                    let (decrypt, encrypt) = kept_ciphers(select, dec, enc, &mut rest);
                    self.stage = InitStage::Done;
                    return Ok((
                        out,
                        Some(Established {
                            info_hash: self.skey,
                            decrypt,
                            encrypt,
                            initial: rest,
                        }),
                    ));
                }
                InitStage::Done => return Ok((out, None)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc4_known_answer() {
        // RFC 6229-style check: key "Key", plaintext "Plaintext".
        let mut data = *b"Plaintext";
        Rc4::new(b"Key").apply(&mut data);
        assert_eq!(data, [0xbb, 0xf3, 0x16, 0xe8, 0xd9, 0x40, 0xaf, 0x0a, 0xd3]);
    }

    /// The initiating side, written out in the test to drive the responder.
    fn initiator(
        skey: InfoHash,
        provide: u32,
        ia: &[u8],
        pad_a: usize,
    ) -> (Vec<u8>, BigUint, BigUint) {
        let p = BigUint::parse_bytes(P_HEX.as_bytes(), 16).unwrap();
        let xa = BigUint::from_bytes_be(&[7u8; 20]);
        let ya = to_96(&BigUint::from(2u32).modpow(&xa, &p));
        let mut first = ya.to_vec();
        first.extend(vec![0x55; pad_a]);
        let _ = (skey, provide, ia);
        (first, xa, p)
    }

    #[test]
    fn full_handshake_plain_and_rc4() {
        let skey = InfoHash([0x42; 20]);
        for (provide, allow_plain, want_rc4) in
            [(3u32, true, false), (2, true, true), (3, false, true)]
        {
            let mut b = MseResponder::new(
                [9u8; 20],
                vec![0xaa; 100],
                vec![InfoHash([1; 20]), skey],
                allow_plain,
            );
            let (first, xa, p) = initiator(skey, provide, b"", 300);
            // Ya and PadA arrive in two pieces.
            let (out1, done) = b.handle(&first[..50]).unwrap();
            assert!(out1.is_empty() && done.is_none());
            let (out2, done) = b.handle(&first[50..]).unwrap();
            assert!(done.is_none());
            assert_eq!(out2.len(), KEY_LEN + 100);
            let yb = BigUint::from_bytes_be(&out2[..KEY_LEN]);
            let secret = to_96(&yb.modpow(&xa, &p));
            let mut step3 = hash(&[b"req1", &secret]).to_vec();
            let req2 = hash(&[b"req2", &skey.0]);
            let req3 = hash(&[b"req3", &secret]);
            step3.extend((0..20).map(|i| req2[i] ^ req3[i]));
            let mut enc = Rc4::for_mse(b"keyA", &secret, &skey);
            let ia = b"\x13BitTorrent protocol-and-more";
            let mut body = vec![0u8; 8];
            body.extend_from_slice(&provide.to_be_bytes());
            body.extend_from_slice(&3u16.to_be_bytes());
            body.extend_from_slice(&[1, 2, 3]);
            body.extend_from_slice(&(ia.len() as u16).to_be_bytes());
            body.extend_from_slice(ia);
            enc.apply(&mut body);
            step3.extend_from_slice(&body);
            let mut after = b"PAYLOAD".to_vec();
            if want_rc4 {
                enc.apply(&mut after);
            }
            step3.extend_from_slice(&after);
            // The answer goes out as soon as len(IA) is in, before IA: a
            // peer whose IA is held back by Nagle must not wait on us.
            let ia_at = 40 + 8 + 4 + 2 + 3 + 2;
            let (reply, done) = b.handle(&step3[..ia_at]).unwrap();
            assert_eq!(reply.len(), 14, "crypto_select sent before IA");
            assert!(done.is_none());
            let (more, done) = b.handle(&step3[ia_at..]).unwrap();
            assert!(more.is_empty());
            let est = done.expect("handshake complete");
            assert_eq!(est.info_hash, skey);
            assert_eq!(est.decrypt.is_some(), want_rc4);
            let mut expect = ia.to_vec();
            expect.extend_from_slice(b"PAYLOAD");
            assert_eq!(est.initial, expect);
            let mut dec_b = Rc4::for_mse(b"keyB", &secret, &skey);
            let mut r = reply.clone();
            dec_b.apply(&mut r);
            assert_eq!(&r[..8], &[0u8; 8]);
            let select = u32::from_be_bytes([r[8], r[9], r[10], r[11]]);
            assert_eq!(select, if want_rc4 { CRYPTO_RC4 } else { CRYPTO_PLAIN });
        }
    }

    #[test]
    fn initiator_and_responder_agree() {
        let skey = InfoHash([0x24; 20]);
        for (provide, allow_plain, want_rc4) in [
            (3u32, true, false),
            (CRYPTO_RC4, true, true),
            (3, false, true),
        ] {
            let ia = b"\x13BitTorrent protocol...".to_vec();
            let (mut a, first) =
                MseInitiator::new([5u8; 20], vec![1; 77], skey, ia.clone(), provide);
            let mut b = MseResponder::new([6u8; 20], vec![2; 300], vec![skey], allow_plain);
            let (to_a, none) = b.handle(&first).unwrap();
            assert!(none.is_none());
            // B's bytes arrive in small pieces.
            let mut to_b = Vec::new();
            let mut a_done = None;
            for chunk in to_a.chunks(37) {
                let (o, d) = a.handle(chunk).unwrap();
                to_b.extend(o);
                assert!(d.is_none());
            }
            let (to_a2, b_done) = b.handle(&to_b).unwrap();
            let b_done = b_done.expect("responder done");
            assert_eq!(b_done.initial, ia);
            for chunk in to_a2.chunks(3) {
                let (o, d) = a.handle(chunk).unwrap();
                assert!(o.is_empty());
                if d.is_some() {
                    a_done = d;
                }
            }
            let a_done = a_done.expect("initiator done");
            assert_eq!(a_done.decrypt.is_some(), want_rc4);
            assert_eq!(b_done.decrypt.is_some(), want_rc4);
            if want_rc4 {
                // The two directions line up.
                let (mut ae, mut bd) = (a_done.encrypt.unwrap(), b_done.decrypt.unwrap());
                let mut msg = *b"after the handshake";
                ae.apply(&mut msg);
                bd.apply(&mut msg);
                assert_eq!(&msg, b"after the handshake");
            }
        }
    }

    #[test]
    fn unknown_torrent_and_no_sync() {
        let mut b = MseResponder::new([9u8; 20], vec![], vec![InfoHash([1; 20])], true);
        let (first, _, _) = initiator(InfoHash([2; 20]), 3, b"", 0);
        b.handle(&first).unwrap();
        assert_eq!(b.handle(&[0x11; 700]).unwrap_err(), MseError::NoSync);
        let mut b = MseResponder::new([9u8; 20], vec![], vec![], true);
        assert_eq!(b.handle(&[0u8; 96]).unwrap_err(), MseError::BadKey);
    }
}
