//! The MSE/PE handshake, our initiator against our responder, each side's
//! bytes cut into reads where the input says, and perhaps one byte of the
//! initiator's stream flipped. Neither side may panic. Untouched, both must
//! finish and agree: the same cipher, the initial payload intact, the two
//! directions lined up; when no method both accept exists, the responder
//! must refuse. The raw input is also fed to a responder as a stranger's
//! opening bytes.

use lodestone_core::InfoHash;
use lodestone_wire::mse::{Established, MseInitiator, MseResponder, CRYPTO_PLAIN, CRYPTO_RC4};

const SKEY: InfoHash = InfoHash([0x5a; 20]);

/// Reads fields off the fuzzer's input; zeros once it runs out.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }

    fn key(&mut self) -> [u8; 20] {
        let mut k = [0u8; 20];
        for (i, b) in self.bytes(20).into_iter().enumerate() {
            k[i] = b;
        }
        // A private key of zero is no key (and 2^0 = 1 is refused).
        k[19] |= 1;
        k
    }
}

/// One side's answer to a read: its output, and the result once finished.
type Step = Result<(Vec<u8>, Option<Established>), String>;

/// Deliver `bytes` in reads of `cut`, flipping the byte at stream offset
/// `flip`; `sent` counts what went before. Returns the output and whether
/// the side finished, or None once it failed.
fn deliver(
    handle: &mut dyn FnMut(&[u8]) -> Step,
    bytes: &mut Vec<u8>,
    cut: usize,
    sent: &mut usize,
    flip: Option<usize>,
    done: &mut Option<Established>,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let pending = std::mem::take(bytes);
    for chunk in pending.chunks(cut) {
        let mut chunk = chunk.to_vec();
        if let Some(f) = flip.filter(|f| (*sent..*sent + chunk.len()).contains(f)) {
            chunk[f - *sent] ^= 0x80;
        }
        *sent += chunk.len();
        let (o, d) = handle(&chunk).ok()?;
        out.extend(o);
        if d.is_some() {
            *done = d;
        }
    }
    Some(out)
}

pub fn mse(data: &[u8]) {
    let mut stranger = MseResponder::new([9; 20], vec![1; 10], vec![SKEY], true);
    for chunk in data.chunks(97) {
        if stranger.handle(chunk).is_err() {
            break;
        }
    }

    let mut f = Fields(data);
    let mode = f.byte();
    let provide = [CRYPTO_PLAIN, CRYPTO_RC4, CRYPTO_PLAIN | CRYPTO_RC4, 0][usize::from(mode & 3)];
    let allow_plain = mode & 4 != 0;
    let corrupt = mode & 8 != 0;
    let pad_a = vec![0xa1; usize::from(f.byte()) * 2];
    let pad_b = vec![0xb2; usize::from(f.byte()) * 2];
    let ia_len = usize::from(f.byte());
    let cut = usize::from(f.byte()).max(1);
    let flip = corrupt.then(|| usize::from(u16::from_be_bytes([f.byte(), f.byte()])));
    let (key_a, key_b) = (f.key(), f.key());
    let ia = f.bytes(ia_len);

    let (mut a, first) = MseInitiator::new(key_a, pad_a, SKEY, ia.clone(), provide);
    let mut b = MseResponder::new(key_b, pad_b, vec![InfoHash([1; 20]), SKEY], allow_plain);
    let mut to_b = first;
    let mut to_a = Vec::new();
    let (mut a_done, mut b_done) = (None, None);
    let (mut sent_b, mut sent_a) = (0, 0);
    let mut failed = false;
    for _ in 0..8 {
        let mut hb = |c: &[u8]| b.handle(c).map_err(|e| e.to_string());
        match deliver(&mut hb, &mut to_b, cut, &mut sent_b, flip, &mut b_done) {
            Some(out) => to_a.extend(out),
            None => {
                failed = true;
                break;
            }
        }
        let mut ha = |c: &[u8]| a.handle(c).map_err(|e| e.to_string());
        match deliver(&mut ha, &mut to_a, cut, &mut sent_a, None, &mut a_done) {
            Some(out) => to_b.extend(out),
            None => {
                failed = true;
                break;
            }
        }
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
    }
    if corrupt {
        return;
    }
    let possible = provide & CRYPTO_RC4 != 0 || (allow_plain && provide & CRYPTO_PLAIN != 0);
    if !possible {
        assert!(
            failed && b_done.is_none(),
            "no common method, yet no refusal"
        );
        return;
    }
    assert!(!failed, "an untouched handshake failed");
    let (Some(a_done), Some(b_done)) = (a_done, b_done) else {
        panic!("an untouched handshake did not finish");
    };
    assert_eq!(b_done.info_hash, SKEY);
    assert_eq!(b_done.initial, ia, "the initial payload arrived changed");
    assert!(a_done.initial.is_empty());
    let rc4 = !(allow_plain && provide & CRYPTO_PLAIN != 0);
    assert_eq!(a_done.decrypt.is_some(), rc4);
    assert_eq!(b_done.decrypt.is_some(), rc4);
    if let (Some(mut ae), Some(mut bd), Some(mut be), Some(mut ad)) = (
        a_done.encrypt,
        b_done.decrypt,
        b_done.encrypt,
        a_done.decrypt,
    ) {
        let mut msg = *b"both directions line up";
        ae.apply(&mut msg);
        bd.apply(&mut msg);
        be.apply(&mut msg);
        ad.apply(&mut msg);
        assert_eq!(&msg, b"both directions line up");
    }
}
