//! Parse arbitrary text as a magnet link; what parses must print to a
//! string that parses back to the same magnet.

use lodestone_core::Magnet;

pub fn magnet(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = s.parse::<Magnet>() {
        let printed = m.to_string();
        let again: Magnet = printed.parse().expect("canonical magnet parses");
        assert_eq!(again, m, "{printed}");
    }
}
