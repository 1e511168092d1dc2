//! Piece picker: which blocks to request from which peer.
//!
//! A sans-IO core: the caller reports what peers have and what arrives, and
//! asks for requests to send. No clock, no I/O, no OS randomness (tie-breaks
//! come from a small PRNG seeded by the caller, so runs are reproducible).
//!
//! # Data structures
//!
//! Per piece (kept compact, the torrent may have ~1M pieces): priority (1
//! byte), availability among peers that sent a partial have-set (4 bytes), and
//! the piece's position in its availability bucket (4 bytes). Seeds (have-all
//! or a full bitfield) are counted once in `seeds` instead of per piece, so a
//! seed connecting or leaving costs O(1), and it shifts every piece equally
//! so the rarity order is unchanged.
//!
//! A wanted piece is in exactly one of three states:
//! - *unstarted*: in a bucket `buckets[class][availability]`, where class is
//!   High or Normal. Moving a piece between buckets is O(1) (swap-remove and
//!   push), so availability changes are O(1) per piece.
//! - *partial*: in `partials`, with one 2-byte slot per block (outstanding
//!   request count, received flag). Only started pieces pay for per-block
//!   state. `open_partials` lists the partial pieces that still have a block
//!   nobody was asked for.
//! - *received*: every block arrived; it stays in `partials` until the caller
//!   reports the hash result.
//!
//! Each peer keeps its own have-set and an ordered set of its in-flight
//! requests. Maps are B-trees, not hash maps: their iteration order is
//! deterministic, which keeps runs reproducible for a given seed.
//!
//! # Complexity
//!
//! `pick`: O(o log o) over the partial pieces with open blocks (o, usually a
//! handful), then for new pieces a scan of the buckets that stops at the first
//! pieces the peer has: O(1)-ish when the peer has most pieces, O(n) in the
//! worst case (a peer holding only a few of many wanted pieces; sequential
//! mode with a peer lacking the next pieces). Endgame: O(blocks of the partial
//! pieces). `on_block`: O(log r + log p) (r = the peer's in-flight requests,
//! p = partial pieces), plus O(peers · log r) when endgame duplicates must be
//! cancelled. O(n) paths: `new`, `peer_bitfield` and `peer_gone` of a
//! non-seed (walk the have-set), `set_file_priorities`; and O(peers) per
//! piece when a piece stops or starts being wanted (`piece_verified`,
//! priority changes) to keep each peer's "interesting" count exact.

use std::collections::{BTreeMap, BTreeSet};

use lodestone_core::{layout::Layout, Bitfield, PieceIndex};

pub const BLOCK_SIZE: u32 = 16 * 1024;

/// A block: up to 16 KiB of one piece (the last block of a piece may be shorter).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Block {
    pub piece: PieceIndex,
    pub begin: u32,
    pub len: u32,
}

/// The caller's handle for a peer connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PeerKey(pub u64);

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, PartialOrd, Ord)]
pub enum Priority {
    Skip,
    #[default]
    Normal,
    High,
}

#[derive(Clone, Debug)]
pub struct PickerConfig {
    /// While we have fewer than this many pieces, pick random pieces (a new
    /// leecher needs something to trade fast).
    pub random_first_pieces: u32,
    /// In endgame, how many peers may have the same block requested at once.
    pub endgame_max_requests_per_block: u32,
    /// Pick pieces in order (streaming) instead of rarest first.
    pub sequential: bool,
}

impl Default for PickerConfig {
    fn default() -> Self {
        Self {
            random_first_pieces: 4,
            endgame_max_requests_per_block: 2,
            sequential: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// We never asked anyone for this block (or already have it): ignore the data.
    Unrequested,
    /// Accepted. `cancel` lists other peers that were also sent a request for
    /// this block (endgame); send them a cancel. Those requests no longer
    /// count as in flight.
    /// `piece_complete` is true when every block of the piece has now arrived:
    /// the caller hashes it and then calls piece_verified or piece_failed.
    Accepted {
        piece_complete: bool,
        cancel: Vec<(PeerKey, Block)>,
    },
}

/// Bucket classes of unstarted pieces, in pick order.
const HIGH: usize = 0;
const NORMAL: usize = 1;

/// `bucket_pos` of a piece that is in no bucket.
const NOT_QUEUED: u32 = u32::MAX;

fn class_of(priority: Priority) -> Option<usize> {
    match priority {
        Priority::High => Some(HIGH),
        Priority::Normal => Some(NORMAL),
        Priority::Skip => None,
    }
}

fn is_allowed(allowed: Option<&[PieceIndex]>, piece: u32) -> bool {
    match allowed {
        None => true,
        Some(list) => list.contains(&PieceIndex(piece)),
    }
}

/// The set pieces of a bitfield, skipping empty bytes (a new peer's
/// have-set is mostly empty).
fn set_pieces(bits: &Bitfield) -> impl Iterator<Item = u32> + '_ {
    let len = bits.len();
    bits.as_bytes()
        .iter()
        .enumerate()
        .filter(|&(_, &byte)| byte != 0)
        .flat_map(|(i, &byte)| {
            // i < ceil(len / 8), so i * 8 fits in a u32 (well, u64 to be sure).
            let base = i as u64 * 8;
            (0..8u32)
                .filter(move |bit| byte & (0x80 >> bit) != 0)
                .map(move |bit| base + u64::from(bit))
        })
        .filter_map(move |p| u32::try_from(p).ok().filter(|&p| p < len))
}

/// splitmix64: tiny, seedable and good enough for tie-breaks (not crypto).
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0), by multiply-shift (no modulo bias worth
    /// caring about here).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Piece lengths without a per-piece table: all pieces have the nominal
/// length except a few (the last; in piece-aligned layouts the last piece of
/// each file).
#[derive(Clone, Debug)]
struct PieceSizes {
    num_pieces: u32,
    piece_length: u32,
    /// (piece, length) for pieces of another length, sorted by piece.
    odd: Vec<(u32, u32)>,
}

impl PieceSizes {
    fn new(layout: &Layout) -> Self {
        let piece_length = layout.piece_length();
        let odd = (0..layout.num_pieces())
            .filter_map(|p| {
                let len = layout.piece_len(PieceIndex(p)).unwrap_or(0);
                (len != piece_length).then_some((p, len))
            })
            .collect();
        Self {
            num_pieces: layout.num_pieces(),
            piece_length,
            odd,
        }
    }

    /// 0 for a piece out of range.
    fn len(&self, piece: u32) -> u32 {
        if piece >= self.num_pieces {
            return 0;
        }
        match self.odd.binary_search_by_key(&piece, |&(p, _)| p) {
            Ok(i) => self.odd[i].1,
            Err(_) => self.piece_length,
        }
    }

    fn blocks(&self, piece: u32) -> u32 {
        self.len(piece).div_ceil(BLOCK_SIZE)
    }
}

/// Block `index` of a piece of `piece_len` bytes (index within range).
fn block_at(piece: u32, piece_len: u32, index: usize) -> Block {
    // index < blocks_in_piece, so begin < piece_len: no overflow.
    let begin = index as u32 * BLOCK_SIZE;
    Block {
        piece: PieceIndex(piece),
        begin,
        len: (piece_len - begin).min(BLOCK_SIZE),
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct BlockSlot {
    /// Peers currently asked for this block (more than one only in endgame).
    requests: u8,
    received: bool,
}

#[derive(Debug)]
struct PartialPiece {
    slots: Vec<BlockSlot>,
    /// Blocks neither received nor requested.
    open: u32,
    received: u32,
    /// Sum of `requests` over the slots.
    outstanding: u32,
    /// Peers that sent blocks of this piece (deduplicated), to blame on a
    /// hash failure.
    senders: Vec<PeerKey>,
    /// When the piece was started, to finish the oldest first.
    started: u64,
}

#[derive(Debug)]
enum PeerPieces {
    /// Has-all or a full bitfield: counted in `PiecePicker::seeds`.
    All,
    Bits(Bitfield),
}

#[derive(Debug)]
struct PeerState {
    pieces: PeerPieces,
    /// Pieces the peer has that we want (not verified, not Skip). Unused for
    /// seeds, which have every wanted piece.
    wanted: u32,
    requests: BTreeSet<Block>,
}

impl PeerState {
    fn new(num_pieces: u32) -> Self {
        Self {
            pieces: PeerPieces::Bits(Bitfield::new(num_pieces)),
            wanted: 0,
            requests: BTreeSet::new(),
        }
    }

    /// `piece` must be in range (seeds "have" anything).
    fn has(&self, piece: u32) -> bool {
        match &self.pieces {
            PeerPieces::All => true,
            PeerPieces::Bits(bits) => bits.get(PieceIndex(piece)),
        }
    }

    fn is_seed(&self) -> bool {
        matches!(self.pieces, PeerPieces::All)
    }
}

pub struct PiecePicker {
    config: PickerConfig,
    sizes: PieceSizes,
    have: Bitfield,
    priority: Vec<Priority>,
    /// Per piece: connected non-seed peers that have it.
    avail: Vec<u32>,
    /// Connected seeds; they add to every piece's availability.
    seeds: u32,
    /// Unstarted wanted pieces: `buckets[class][availability]`.
    buckets: [Vec<Vec<u32>>; 2],
    /// Per piece: its index in its bucket, or NOT_QUEUED.
    bucket_pos: Vec<u32>,
    /// Pieces in buckets.
    unstarted: u32,
    partials: BTreeMap<u32, PartialPiece>,
    /// Partial pieces with at least one open block.
    open_partials: BTreeSet<u32>,
    next_start_order: u64,
    peers: BTreeMap<PeerKey, PeerState>,
    /// Pieces not verified and not Skip.
    wanted_missing: u32,
    bytes_left: u64,
    /// Every piece below this is verified or Skip (sequential mode starts
    /// its scan here).
    sequential_hint: u32,
    rng: SplitMix64,
}

impl std::fmt::Debug for PiecePicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiecePicker")
            .field("have", &self.have)
            .field("unstarted", &self.unstarted)
            .field("partials", &self.partials.len())
            .field("peers", &self.peers.len())
            .field("bytes_left", &self.bytes_left)
            .finish_non_exhaustive()
    }
}

impl PiecePicker {
    /// `have`: pieces already verified on disk (resume). Its len must equal
    /// layout.num_pieces() (bits past the end are ignored).
    pub fn new(layout: &Layout, have: &Bitfield, config: PickerConfig, seed: u64) -> Self {
        let sizes = PieceSizes::new(layout);
        let num_pieces = sizes.num_pieces;
        let n = num_pieces as usize;
        let mut own = Bitfield::new(num_pieces);
        for p in set_pieces(have) {
            own.set(PieceIndex(p));
        }
        let mut picker = Self {
            config,
            sizes,
            have: own,
            priority: vec![Priority::Normal; n],
            avail: vec![0; n],
            seeds: 0,
            buckets: [Vec::new(), Vec::new()],
            bucket_pos: vec![NOT_QUEUED; n],
            unstarted: 0,
            partials: BTreeMap::new(),
            open_partials: BTreeSet::new(),
            next_start_order: 0,
            peers: BTreeMap::new(),
            wanted_missing: 0,
            bytes_left: 0,
            sequential_hint: 0,
            rng: SplitMix64(seed),
        };
        for p in 0..num_pieces {
            if !picker.have.get(PieceIndex(p)) {
                picker.wanted_missing += 1;
                picker.bytes_left += u64::from(picker.sizes.len(p));
                picker.queue_if_unstarted(p);
            }
        }
        picker
    }

    pub fn num_pieces(&self) -> u32 {
        self.sizes.num_pieces
    }

    /// Bytes in the piece (0 out of range).
    pub fn piece_len(&self, piece: PieceIndex) -> u32 {
        self.sizes.len(piece.0)
    }

    pub fn blocks_in_piece(&self, piece: PieceIndex) -> u32 {
        self.sizes.blocks(piece.0)
    }

    pub fn piece_priority(&self, piece: PieceIndex) -> Priority {
        self.priority
            .get(piece.as_usize())
            .copied()
            .unwrap_or(Priority::Skip)
    }

    pub fn is_sequential(&self) -> bool {
        self.config.sequential
    }

    // ---- availability ----

    pub fn peer_bitfield(&mut self, peer: PeerKey, bits: &Bitfield) {
        self.forget_peer_pieces(peer);
        let n = self.num_pieces();
        if bits.len() == n && bits.is_full() {
            self.make_seed(peer);
            return;
        }
        let mut own = Bitfield::new(n);
        let mut wanted = 0;
        for p in set_pieces(bits) {
            // `set` refuses pieces out of range.
            if own.set(PieceIndex(p)) {
                self.change_availability(p, true);
                if self.is_wanted(p) {
                    wanted += 1;
                }
            }
        }
        let state = self.peers.entry(peer).or_insert_with(|| PeerState::new(0));
        state.pieces = PeerPieces::Bits(own);
        state.wanted = wanted;
    }

    pub fn peer_has_all(&mut self, peer: PeerKey) {
        self.forget_peer_pieces(peer);
        self.make_seed(peer);
    }

    pub fn peer_has(&mut self, peer: PeerKey, piece: PieceIndex) {
        let n = self.num_pieces();
        if piece.0 >= n {
            return;
        }
        let wanted = self.is_wanted(piece.0);
        let state = self.peers.entry(peer).or_insert_with(|| PeerState::new(n));
        let newly = match &mut state.pieces {
            PeerPieces::All => false,
            PeerPieces::Bits(bits) => bits.set(piece),
        };
        if newly {
            if wanted {
                state.wanted += 1;
            }
            self.change_availability(piece.0, true);
        }
    }

    /// The peer disconnected: drop its availability and release its
    /// in-flight requests.
    pub fn peer_gone(&mut self, peer: PeerKey) {
        self.on_choked(peer);
        self.forget_peer_pieces(peer);
        self.peers.remove(&peer);
    }

    pub fn peer_has_piece(&self, peer: PeerKey, piece: PieceIndex) -> bool {
        piece.0 < self.num_pieces() && self.peers.get(&peer).is_some_and(|s| s.has(piece.0))
    }

    /// Whether the peer has any piece we still want (drives "interested").
    pub fn is_interesting(&self, peer: PeerKey) -> bool {
        match self.peers.get(&peer) {
            None => false,
            Some(state) if state.is_seed() => self.wanted_missing > 0,
            Some(state) => state.wanted > 0,
        }
    }

    // ---- what we want ----

    pub fn set_piece_priority(&mut self, piece: PieceIndex, p: Priority) {
        let idx = piece.0;
        if idx >= self.num_pieces() || self.priority[idx as usize] == p {
            return;
        }
        // Take it out of its bucket before the key changes.
        self.unqueue(idx);
        let was_wanted = self.is_wanted(idx);
        self.priority[idx as usize] = p;
        let now_wanted = self.is_wanted(idx);
        if was_wanted != now_wanted {
            let len = u64::from(self.sizes.len(idx));
            if now_wanted {
                self.wanted_missing += 1;
                self.bytes_left += len;
                self.sequential_hint = self.sequential_hint.min(idx);
            } else {
                self.wanted_missing -= 1;
                self.bytes_left -= len;
            }
            self.adjust_peer_wanted(idx, now_wanted);
        }
        // A partial piece stays partial (its data is kept); pick skips it
        // while it is Skip.
        self.queue_if_unstarted(idx);
    }

    /// One priority per file of the layout (missing entries count as
    /// Normal); a piece gets the highest priority of the files it touches
    /// (Skip only if all its files are Skip). O(pieces + files).
    pub fn set_file_priorities(&mut self, layout: &Layout, priorities: &[Priority]) {
        let n = self.num_pieces() as usize;
        let mut best: Vec<Option<Priority>> = vec![None; n];
        for file in 0..layout.num_files() {
            let file_priority = priorities.get(file).copied().unwrap_or_default();
            for p in layout.file_pieces(file) {
                if let Some(slot) = best.get_mut(p as usize) {
                    *slot = Some(slot.map_or(file_priority, |b| b.max(file_priority)));
                }
            }
        }
        for (p, priority) in best.into_iter().enumerate() {
            // p < num_pieces, a u32.
            self.set_piece_priority(PieceIndex(p as u32), priority.unwrap_or_default());
        }
    }

    pub fn set_sequential(&mut self, on: bool) {
        self.config.sequential = on;
    }

    // ---- picking ----

    /// Append up to `max` new block requests for `peer` to `out`. If
    /// `allowed` is Some, only those pieces may be picked (BEP 6 allowed-fast
    /// while choked). Never picks a piece the peer lacks, a Skip piece, a
    /// verified piece, or a block already requested from this peer. Order of
    /// preference: pieces already started (finish what is started, to limit
    /// partial pieces; High first, then oldest, or lowest index when
    /// sequential), then High priority, then (random order while we have
    /// fewer than random_first_pieces) rarest first with random tie-breaks,
    /// or in index order when sequential (sequential wins over random-first:
    /// a stream wants its first pieces first). When every wanted block is
    /// already requested (endgame), it may return blocks already requested
    /// from other peers, at most endgame_max_requests_per_block requests per
    /// block in total.
    pub fn pick(
        &mut self,
        peer: PeerKey,
        max: usize,
        allowed: Option<&[PieceIndex]>,
        out: &mut Vec<Block>,
    ) {
        // Nothing it has is wanted: skip the scans (unknown peers included).
        if max == 0 || !self.is_interesting(peer) {
            return;
        }
        let mut remaining = max;
        for piece in self.started_candidates(peer, allowed) {
            self.request_open_blocks(peer, piece, &mut remaining, out);
            if remaining == 0 {
                return;
            }
        }
        for piece in self.choose_unstarted(peer, remaining, allowed) {
            self.start_partial(piece);
            self.request_open_blocks(peer, piece, &mut remaining, out);
            if remaining == 0 {
                return;
            }
        }
        if self.in_endgame() {
            self.request_duplicates(peer, remaining, allowed, out);
        }
    }

    /// Partial pieces with open blocks this peer can serve, in pick order.
    fn started_candidates(&self, peer: PeerKey, allowed: Option<&[PieceIndex]>) -> Vec<u32> {
        let Some(state) = self.peers.get(&peer) else {
            return Vec::new();
        };
        let mut candidates: Vec<(usize, u64, u32)> = self
            .open_partials
            .iter()
            .filter(|&&p| state.has(p) && is_allowed(allowed, p))
            .filter_map(|&p| {
                let class = class_of(self.priority[p as usize])?;
                let order = if self.config.sequential {
                    u64::from(p)
                } else {
                    self.partials.get(&p)?.started
                };
                Some((class, order, p))
            })
            .collect();
        candidates.sort_unstable();
        candidates.into_iter().map(|(_, _, p)| p).collect()
    }

    /// Unstarted pieces for the peer, in preference order, just enough to
    /// cover `need_blocks` blocks. Does not change the buckets.
    fn choose_unstarted(
        &mut self,
        peer: PeerKey,
        need_blocks: usize,
        allowed: Option<&[PieceIndex]>,
    ) -> Vec<u32> {
        let mut chosen = Vec::new();
        if self.unstarted == 0 {
            return chosen;
        }
        let sequential = self.config.sequential;
        if sequential {
            self.advance_sequential_hint();
        }
        let random_first = !sequential && self.have.count() < self.config.random_first_pieces;
        let Some(state) = self.peers.get(&peer) else {
            return chosen;
        };
        let mut need = need_blocks as u64;
        // Records a choice; true once enough blocks are covered.
        let mut take = |chosen: &mut Vec<u32>, piece: u32, blocks: u32| {
            chosen.push(piece);
            need = need.saturating_sub(u64::from(blocks));
            need == 0
        };

        if let Some(allowed) = allowed {
            // Allowed-fast sets are small: just sort them by preference.
            let mut candidates: Vec<(usize, u64, u32)> = Vec::new();
            for &PieceIndex(p) in allowed {
                if p >= self.num_pieces()
                    || self.bucket_pos[p as usize] == NOT_QUEUED
                    || !state.has(p)
                    || candidates.iter().any(|&(_, _, q)| q == p)
                {
                    continue;
                }
                let Some(class) = class_of(self.priority[p as usize]) else {
                    continue;
                };
                let order = if sequential {
                    u64::from(p)
                } else if random_first {
                    self.rng.next_u64()
                } else {
                    (u64::from(self.avail[p as usize]) << 32) | (self.rng.next_u64() >> 32)
                };
                candidates.push((class, order, p));
            }
            candidates.sort_unstable();
            for (_, _, p) in candidates {
                if take(&mut chosen, p, self.sizes.blocks(p)) {
                    break;
                }
            }
            return chosen;
        }

        // Pieces in bucket 0 are held by no non-seed peer: only a seed can
        // serve them.
        let lowest_level = if state.is_seed() { 0 } else { 1 };
        for class in [HIGH, NORMAL] {
            let levels = self.buckets[class].get(lowest_level..).unwrap_or(&[]);
            if sequential {
                if class == HIGH {
                    // High pieces are few: sort them by index.
                    let mut high: Vec<u32> = levels
                        .iter()
                        .flatten()
                        .copied()
                        .filter(|&p| state.has(p))
                        .collect();
                    high.sort_unstable();
                    for p in high {
                        if take(&mut chosen, p, self.sizes.blocks(p)) {
                            return chosen;
                        }
                    }
                } else {
                    // O(n) worst case: walks forward from the first wanted piece.
                    for p in self.sequential_hint..self.num_pieces() {
                        let i = p as usize;
                        if self.bucket_pos[i] != NOT_QUEUED
                            && self.priority[i] == Priority::Normal
                            && state.has(p)
                            && take(&mut chosen, p, self.sizes.blocks(p))
                        {
                            return chosen;
                        }
                    }
                }
            } else if random_first {
                // One random starting point across the whole class, ignoring
                // rarity. O(n) worst case, only for the first few pieces.
                let total: usize = levels.iter().map(Vec::len).sum();
                if total == 0 {
                    continue;
                }
                let mut offset = self.rng.below(total);
                let mut level = 0;
                while level < levels.len() && offset >= levels[level].len() {
                    offset -= levels[level].len();
                    level += 1;
                }
                let Some(first) = levels.get(level) else {
                    continue;
                };
                let order = first[offset..]
                    .iter()
                    .chain(levels[level + 1..].iter().flatten())
                    .chain(levels[..level].iter().flatten())
                    .chain(first[..offset].iter());
                for &p in order {
                    if state.has(p) && take(&mut chosen, p, self.sizes.blocks(p)) {
                        return chosen;
                    }
                }
            } else {
                // Rarest first; within one availability level, start at a
                // random place so ties break randomly. O(bucket) worst case.
                for bucket in levels {
                    if bucket.is_empty() {
                        continue;
                    }
                    let start = self.rng.below(bucket.len());
                    for &p in bucket[start..].iter().chain(&bucket[..start]) {
                        if state.has(p) && take(&mut chosen, p, self.sizes.blocks(p)) {
                            return chosen;
                        }
                    }
                }
            }
        }
        chosen
    }

    /// Move an unstarted piece into `partials`.
    fn start_partial(&mut self, piece: u32) {
        self.unqueue(piece);
        let blocks = self.sizes.blocks(piece);
        self.partials.insert(
            piece,
            PartialPiece {
                slots: vec![BlockSlot::default(); blocks as usize],
                open: blocks,
                received: 0,
                outstanding: 0,
                senders: Vec::new(),
                started: self.next_start_order,
            },
        );
        self.next_start_order += 1;
        if blocks > 0 {
            self.open_partials.insert(piece);
        }
    }

    /// Request the open blocks of a partial piece from the peer, in order.
    fn request_open_blocks(
        &mut self,
        peer: PeerKey,
        piece: u32,
        remaining: &mut usize,
        out: &mut Vec<Block>,
    ) {
        let piece_len = self.sizes.len(piece);
        let (Some(partial), Some(state)) =
            (self.partials.get_mut(&piece), self.peers.get_mut(&peer))
        else {
            return;
        };
        for (i, slot) in partial.slots.iter_mut().enumerate() {
            if *remaining == 0 || partial.open == 0 {
                break;
            }
            if slot.received || slot.requests > 0 {
                continue;
            }
            let block = block_at(piece, piece_len, i);
            slot.requests = 1;
            partial.open -= 1;
            partial.outstanding += 1;
            state.requests.insert(block);
            out.push(block);
            *remaining -= 1;
        }
        if partial.open == 0 {
            self.open_partials.remove(&piece);
        }
    }

    /// Endgame: ask this peer too for blocks already requested elsewhere,
    /// least-requested first. O(blocks of the partial pieces × limit).
    fn request_duplicates(
        &mut self,
        peer: PeerKey,
        mut remaining: usize,
        allowed: Option<&[PieceIndex]>,
        out: &mut Vec<Block>,
    ) {
        let limit = self
            .config
            .endgame_max_requests_per_block
            .min(u32::from(u8::MAX)) as u8;
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        for level in 1..limit {
            for (&piece, partial) in self.partials.iter_mut() {
                if self.have.get(PieceIndex(piece))
                    || self.priority[piece as usize] == Priority::Skip
                    || !state.has(piece)
                    || !is_allowed(allowed, piece)
                {
                    continue;
                }
                let piece_len = self.sizes.len(piece);
                for (i, slot) in partial.slots.iter_mut().enumerate() {
                    if slot.received || slot.requests != level {
                        continue;
                    }
                    let block = block_at(piece, piece_len, i);
                    if !state.requests.insert(block) {
                        continue; // already asked this peer
                    }
                    slot.requests += 1;
                    partial.outstanding += 1;
                    out.push(block);
                    remaining -= 1;
                    if remaining == 0 {
                        return;
                    }
                }
            }
        }
    }

    // ---- arrivals and failures ----

    pub fn on_block(&mut self, peer: PeerKey, block: Block) -> BlockOutcome {
        // Only blocks we asked this very peer for are accepted; the request
        // set holds exact (piece, begin, len) triples made by the picker, so
        // anything a hostile peer makes up fails this lookup.
        let Some(state) = self.peers.get_mut(&peer) else {
            return BlockOutcome::Unrequested;
        };
        if !state.requests.remove(&block) {
            return BlockOutcome::Unrequested;
        }
        let piece = block.piece.0;
        let Some(partial) = self.partials.get_mut(&piece) else {
            return BlockOutcome::Unrequested;
        };
        let Some(slot) = partial.slots.get_mut((block.begin / BLOCK_SIZE) as usize) else {
            return BlockOutcome::Unrequested;
        };
        slot.requests = slot.requests.saturating_sub(1);
        partial.outstanding = partial.outstanding.saturating_sub(1);
        if slot.received {
            return BlockOutcome::Unrequested;
        }
        slot.received = true;
        partial.received += 1;
        if !partial.senders.contains(&peer) {
            partial.senders.push(peer);
        }
        let mut cancel = Vec::new();
        if slot.requests > 0 {
            // Endgame duplicate: the other requests are now moot.
            partial.outstanding = partial.outstanding.saturating_sub(u32::from(slot.requests));
            slot.requests = 0;
            for (&other, other_state) in self.peers.iter_mut() {
                if other != peer && other_state.requests.remove(&block) {
                    cancel.push((other, block));
                }
            }
        }
        BlockOutcome::Accepted {
            piece_complete: partial.received as usize == partial.slots.len(),
            cancel,
        }
    }

    /// The peer rejected the request (BEP 6) or we gave up on it (timeout):
    /// the block can be picked again.
    pub fn on_request_failed(&mut self, peer: PeerKey, block: Block) {
        let removed = self
            .peers
            .get_mut(&peer)
            .is_some_and(|state| state.requests.remove(&block));
        if removed {
            self.release_request(block);
        }
    }

    /// The peer choked us: release all its in-flight requests (without BEP 6,
    /// a choke discards them).
    pub fn on_choked(&mut self, peer: PeerKey) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        for block in std::mem::take(&mut state.requests) {
            self.release_request(block);
        }
    }

    pub fn in_flight(&self, peer: PeerKey) -> usize {
        self.peers.get(&peer).map_or(0, |s| s.requests.len())
    }

    /// Blocks requested from the peer and not yet answered, in (piece, begin)
    /// order.
    pub fn requests_of(&self, peer: PeerKey) -> Vec<Block> {
        self.peers
            .get(&peer)
            .map_or_else(Vec::new, |s| s.requests.iter().copied().collect())
    }

    /// The piece hashed correctly: we have it now.
    pub fn piece_verified(&mut self, piece: PieceIndex) {
        let p = piece.0;
        if p >= self.num_pieces() || self.have.get(piece) {
            return;
        }
        self.unqueue(p);
        self.drop_partial(p);
        let was_wanted = self.is_wanted(p);
        self.have.set(piece);
        if was_wanted {
            self.wanted_missing -= 1;
            self.bytes_left -= u64::from(self.sizes.len(p));
            self.adjust_peer_wanted(p, false);
        }
    }

    /// The piece failed its hash: forget its blocks so it is fetched again;
    /// return the peers that sent blocks of it (deduplicated, in order of
    /// first contribution). A verified piece stays verified.
    pub fn piece_failed(&mut self, piece: PieceIndex) -> Vec<PeerKey> {
        let p = piece.0;
        if p >= self.num_pieces() || self.have.get(piece) {
            return Vec::new();
        }
        let senders = self
            .drop_partial(p)
            .map_or_else(Vec::new, |partial| partial.senders);
        self.queue_if_unstarted(p);
        senders
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Every piece that is not Skip is verified.
    pub fn is_complete(&self) -> bool {
        self.wanted_missing == 0
    }

    /// Every wanted block is requested or received, and something is still
    /// missing. O(open partial pieces).
    pub fn in_endgame(&self) -> bool {
        self.wanted_missing > 0
            && self.unstarted == 0
            && !self
                .open_partials
                .iter()
                .any(|&p| self.priority[p as usize] != Priority::Skip)
    }

    /// Bytes of wanted, not-yet-verified pieces.
    pub fn bytes_left(&self) -> u64 {
        self.bytes_left
    }

    pub fn availability(&self, piece: PieceIndex) -> u32 {
        self.avail
            .get(piece.as_usize())
            .map_or(0, |&a| a.saturating_add(self.seeds))
    }

    // ---- internals ----

    fn is_wanted(&self, piece: u32) -> bool {
        !self.have.get(PieceIndex(piece)) && self.priority[piece as usize] != Priority::Skip
    }

    /// Put the piece in its bucket if it is wanted, not started and not
    /// already there.
    fn queue_if_unstarted(&mut self, piece: u32) {
        let i = piece as usize;
        if self.bucket_pos[i] != NOT_QUEUED
            || self.have.get(PieceIndex(piece))
            || self.partials.contains_key(&piece)
            || self.sizes.blocks(piece) == 0
        {
            return;
        }
        self.push_to_bucket(piece);
    }

    /// Append the piece to the bucket of its current priority and
    /// availability; the caller has checked that it belongs in one.
    fn push_to_bucket(&mut self, piece: u32) {
        let i = piece as usize;
        let Some(class) = class_of(self.priority[i]) else {
            return;
        };
        let level = self.avail[i] as usize;
        let levels = &mut self.buckets[class];
        if levels.len() <= level {
            levels.resize_with(level + 1, Vec::new);
        }
        // A bucket holds at most num_pieces entries, a u32.
        self.bucket_pos[i] = levels[level].len() as u32;
        levels[level].push(piece);
        self.unstarted += 1;
    }

    /// Take the piece out of its bucket (keyed by its current priority and
    /// availability). Returns whether it was there.
    fn unqueue(&mut self, piece: u32) -> bool {
        let i = piece as usize;
        let pos = self.bucket_pos[i];
        if pos == NOT_QUEUED {
            return false;
        }
        self.bucket_pos[i] = NOT_QUEUED;
        self.unstarted -= 1;
        let level = self.avail[i] as usize;
        let bucket =
            class_of(self.priority[i]).and_then(|class| self.buckets[class].get_mut(level));
        if let Some(bucket) = bucket {
            let pos = pos as usize;
            if pos < bucket.len() {
                bucket.swap_remove(pos);
                if let Some(&moved) = bucket.get(pos) {
                    self.bucket_pos[moved as usize] = pos as u32;
                }
            }
        }
        true
    }

    fn change_availability(&mut self, piece: u32, up: bool) {
        let queued = self.unqueue(piece);
        let a = &mut self.avail[piece as usize];
        *a = if up {
            a.saturating_add(1)
        } else {
            a.saturating_sub(1)
        };
        if queued {
            // Still unstarted and wanted: only its bucket changes (hot path of
            // peer_bitfield, so skip the eligibility checks).
            self.push_to_bucket(piece);
        }
    }

    /// Undo the peer's contribution to availability (before replacing its
    /// have-set or dropping it). O(n) for a non-seed.
    fn forget_peer_pieces(&mut self, peer: PeerKey) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.wanted = 0;
        // The caller replaces or drops the have-set next: an empty one will do.
        match std::mem::replace(&mut state.pieces, PeerPieces::Bits(Bitfield::default())) {
            PeerPieces::All => self.seeds = self.seeds.saturating_sub(1),
            PeerPieces::Bits(bits) => {
                for p in set_pieces(&bits) {
                    self.change_availability(p, false);
                }
            }
        }
    }

    fn make_seed(&mut self, peer: PeerKey) {
        let state = self.peers.entry(peer).or_insert_with(|| PeerState::new(0));
        state.pieces = PeerPieces::All;
        state.wanted = 0;
        self.seeds += 1;
    }

    /// A piece started or stopped being wanted: keep the peers' counts of
    /// wanted pieces exact. O(peers).
    fn adjust_peer_wanted(&mut self, piece: u32, now_wanted: bool) {
        for state in self.peers.values_mut() {
            if let PeerPieces::Bits(bits) = &state.pieces {
                if bits.get(PieceIndex(piece)) {
                    state.wanted = if now_wanted {
                        state.wanted + 1
                    } else {
                        state.wanted.saturating_sub(1)
                    };
                }
            }
        }
    }

    fn advance_sequential_hint(&mut self) {
        while self.sequential_hint < self.num_pieces() && !self.is_wanted(self.sequential_hint) {
            self.sequential_hint += 1;
        }
    }

    /// A request (already removed from its peer's set) is over without data.
    fn release_request(&mut self, block: Block) {
        let piece = block.piece.0;
        let Some(partial) = self.partials.get_mut(&piece) else {
            return;
        };
        if let Some(slot) = partial.slots.get_mut((block.begin / BLOCK_SIZE) as usize) {
            if slot.requests > 0 {
                slot.requests -= 1;
                partial.outstanding = partial.outstanding.saturating_sub(1);
                if slot.requests == 0 && !slot.received {
                    partial.open += 1;
                    self.open_partials.insert(piece);
                }
            }
        }
        // Nothing received and nobody asked: the piece is unstarted again and
        // competes on rarity, rather than lingering as a partial piece.
        if partial.received == 0 && partial.outstanding == 0 {
            self.drop_partial(piece);
            self.queue_if_unstarted(piece);
        }
    }

    /// Forget a partial piece, withdrawing any requests still out for it.
    fn drop_partial(&mut self, piece: u32) -> Option<PartialPiece> {
        let partial = self.partials.remove(&piece)?;
        self.open_partials.remove(&piece);
        if partial.outstanding > 0 {
            // O(peers · requests); only when a piece is dropped mid-flight.
            for state in self.peers.values_mut() {
                state.requests.retain(|b| b.piece.0 != piece);
            }
        }
        Some(partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const B: u32 = BLOCK_SIZE;

    fn layout(piece_len: u32, files: &[u64]) -> Layout {
        Layout::contiguous(piece_len, files.iter().copied()).unwrap()
    }

    fn rarest_config() -> PickerConfig {
        PickerConfig {
            random_first_pieces: 0,
            ..PickerConfig::default()
        }
    }

    fn new_picker(l: &Layout, config: PickerConfig, seed: u64) -> PiecePicker {
        PiecePicker::new(l, &Bitfield::new(l.num_pieces()), config, seed)
    }

    fn bits(n: u32, set: impl IntoIterator<Item = u32>) -> Bitfield {
        let mut b = Bitfield::new(n);
        for p in set {
            b.set(PieceIndex(p));
        }
        b
    }

    fn pick(pp: &mut PiecePicker, peer: PeerKey, max: usize) -> Vec<Block> {
        let mut out = Vec::new();
        pp.pick(peer, max, None, &mut out);
        out
    }

    fn pieces_of(blocks: &[Block]) -> Vec<u32> {
        let mut v: Vec<u32> = blocks.iter().map(|b| b.piece.0).collect();
        v.dedup();
        v
    }

    /// Deliver every block of a piece from `peer` (which was asked for them)
    /// and verify it.
    fn deliver_and_verify(pp: &mut PiecePicker, peer: PeerKey, blocks: &[Block]) {
        for &b in blocks {
            assert!(matches!(
                pp.on_block(peer, b),
                BlockOutcome::Accepted { .. }
            ));
        }
        for p in pieces_of(blocks) {
            pp.piece_verified(PieceIndex(p));
        }
    }

    fn accepted(complete: bool) -> BlockOutcome {
        BlockOutcome::Accepted {
            piece_complete: complete,
            cancel: Vec::new(),
        }
    }

    const A: PeerKey = PeerKey(1);
    const P2: PeerKey = PeerKey(2);
    const P3: PeerKey = PeerKey(3);
    const P4: PeerKey = PeerKey(4);
    const P5: PeerKey = PeerKey(5);

    #[test]
    fn blocks_cover_each_piece_with_short_last_piece_and_block() {
        // 3.5 blocks per piece; last piece is 20000 bytes.
        let piece_len = 7 * B / 2;
        let l = layout(piece_len, &[2 * u64::from(piece_len) + 20000]);
        let mut pp = new_picker(&l, rarest_config(), 1);
        assert_eq!(pp.num_pieces(), 3);
        assert_eq!(pp.piece_len(PieceIndex(0)), piece_len);
        assert_eq!(pp.piece_len(PieceIndex(2)), 20000);
        assert_eq!(pp.piece_len(PieceIndex(3)), 0);
        assert_eq!(pp.blocks_in_piece(PieceIndex(0)), 4);
        assert_eq!(pp.blocks_in_piece(PieceIndex(2)), 2);
        assert_eq!(pp.bytes_left(), l.total_length());
        pp.peer_has_all(A);
        let got: BTreeSet<Block> = pick(&mut pp, A, 100).into_iter().collect();
        assert_eq!(got.len(), 10);
        for p in 0..3 {
            let mut next = 0;
            for b in got.iter().filter(|b| b.piece.0 == p) {
                assert_eq!(b.begin, next);
                assert!(b.len > 0 && b.len <= B);
                next += b.len;
            }
            assert_eq!(next, l.piece_len(PieceIndex(p)).unwrap());
        }
        let last = got.iter().next_back().unwrap();
        assert_eq!(
            *last,
            Block {
                piece: PieceIndex(2),
                begin: B,
                len: 20000 - B
            }
        );
        let half = got
            .iter()
            .find(|b| b.piece.0 == 0 && b.begin == 3 * B)
            .unwrap();
        assert_eq!(half.len, B / 2);
    }

    #[test]
    fn piece_aligned_layout_lengths() {
        let l = Layout::piece_aligned(2 * B, [u64::from(3 * B), 100]).unwrap();
        let pp = new_picker(&l, rarest_config(), 1);
        assert_eq!(pp.num_pieces(), 3);
        assert_eq!(pp.piece_len(PieceIndex(0)), 2 * B);
        assert_eq!(pp.piece_len(PieceIndex(1)), B);
        assert_eq!(pp.piece_len(PieceIndex(2)), 100);
        assert_eq!(pp.bytes_left(), u64::from(3 * B) + 100);
    }

    #[test]
    fn rarest_first_with_peers_of_different_availability() {
        let l = layout(B, &[6 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 7);
        // availability: p0=1 p1=2 p2=3 p3=4 p4=5 p5=5
        pp.peer_bitfield(A, &bits(6, 0..6));
        pp.peer_bitfield(P2, &bits(6, 1..6));
        pp.peer_bitfield(P3, &bits(6, 2..6));
        pp.peer_bitfield(P4, &bits(6, 3..6));
        pp.peer_bitfield(P5, &bits(6, 4..6));
        let avail: Vec<u32> = (0..6).map(|p| pp.availability(PieceIndex(p))).collect();
        assert_eq!(avail, [1, 2, 3, 4, 5, 5]);
        let mut order = Vec::new();
        for _ in 0..6 {
            order.extend(pieces_of(&pick(&mut pp, A, 1)));
        }
        assert_eq!(&order[..4], [0, 1, 2, 3]);
        assert_eq!(
            order[4..].iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([4, 5])
        );

        // A peer that lacks the rarest piece gets the rarest it has.
        let mut pp = new_picker(&l, rarest_config(), 7);
        pp.peer_bitfield(A, &bits(6, 0..6));
        pp.peer_bitfield(P2, &bits(6, 1..6));
        pp.peer_bitfield(P3, &bits(6, 2..6));
        assert_eq!(pieces_of(&pick(&mut pp, P2, 1)), [1]);
        // Seeds raise every piece equally and keep the order.
        pp.peer_has_all(P4);
        assert_eq!(pp.availability(PieceIndex(0)), 2);
        assert_eq!(pp.availability(PieceIndex(5)), 4);
        assert_eq!(pieces_of(&pick(&mut pp, P4, 1)), [0]);
        // Availability follows have messages and departures.
        pp.peer_has(P5, PieceIndex(0));
        assert_eq!(pp.availability(PieceIndex(0)), 3);
        pp.peer_gone(A);
        assert_eq!(pp.availability(PieceIndex(0)), 2);
        assert_eq!(pp.availability(PieceIndex(5)), 3);
        pp.peer_gone(P4);
        assert_eq!(pp.availability(PieceIndex(5)), 2);
        // Now p2..p5 have availability 2 and p0 has 1 (from P5's have).
        assert_eq!(pp.availability(PieceIndex(0)), 1);
    }

    #[test]
    fn availability_change_reorders_unstarted_pieces() {
        let l = layout(B, &[3 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 3);
        pp.peer_has_all(A);
        pp.peer_bitfield(P2, &bits(3, [0, 2]));
        pp.peer_has(P3, PieceIndex(0));
        pp.peer_has(P3, PieceIndex(2));
        pp.peer_has(P4, PieceIndex(1));
        pp.peer_has(P4, PieceIndex(2));
        // avail (non-seed): p0=2 p1=1 p2=3
        assert_eq!(pieces_of(&pick(&mut pp, A, 1)), [1]);
        assert_eq!(pieces_of(&pick(&mut pp, A, 1)), [0]);
        assert_eq!(pieces_of(&pick(&mut pp, A, 1)), [2]);
    }

    #[test]
    fn random_tie_break_is_deterministic_for_a_seed() {
        let l = layout(B, &[64 * u64::from(B)]);
        let run = |seed: u64| {
            let mut pp = new_picker(&l, rarest_config(), seed);
            pp.peer_has_all(A);
            (0..10)
                .flat_map(|_| pieces_of(&pick(&mut pp, A, 1)))
                .collect::<Vec<u32>>()
        };
        for seed in 0..5 {
            assert_eq!(run(seed), run(seed));
        }
        let firsts: BTreeSet<u32> = (0..8).map(|s| run(s)[0]).collect();
        assert!(firsts.len() > 1, "ties should break randomly: {firsts:?}");
        assert!((0..8).any(|s| run(s) != (0..10).collect::<Vec<_>>()));
    }

    #[test]
    fn partial_pieces_are_finished_first() {
        let l = layout(4 * B, &[8 * 4 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 11);
        pp.peer_has_all(A);
        pp.peer_has_all(P2);
        // Piece 7 is the rarest (P3 has all the others).
        pp.peer_bitfield(P3, &bits(8, 0..7));
        // A starts piece 3 through the allowed-fast path.
        let mut out = Vec::new();
        pp.pick(A, 2, Some(&[PieceIndex(3)]), &mut out);
        assert_eq!(pieces_of(&out), [3]);
        assert_eq!(out.len(), 2);
        // P2 finishes piece 3 before the rarer piece 7.
        let got = pick(&mut pp, P2, 3);
        assert_eq!(
            got.iter().map(|b| (b.piece.0, b.begin)).collect::<Vec<_>>(),
            [(3, 2 * B), (3, 3 * B), (7, 0)]
        );
        // A released block of a started piece goes first again.
        pp.on_request_failed(P2, got[0]);
        pp.on_request_failed(P2, got[2]);
        let again = pick(&mut pp, P3, 1);
        assert_eq!(again, [got[0]]);
    }

    #[test]
    fn random_first_pieces_for_a_new_leecher() {
        let l = layout(B, &[100 * u64::from(B)]);
        let first_pick = |config: PickerConfig, seed: u64| {
            let mut pp = new_picker(&l, config, seed);
            pp.peer_has_all(A);
            // Pieces 0..50 are common, 50..100 rare (only the seed).
            pp.peer_bitfield(P2, &bits(100, 0..50));
            pp.peer_bitfield(P3, &bits(100, 0..50));
            pieces_of(&pick(&mut pp, A, 1))[0]
        };
        for seed in 0..16 {
            assert!(first_pick(rarest_config(), seed) >= 50);
        }
        let random: BTreeSet<u32> = (0..16)
            .map(|seed| first_pick(PickerConfig::default(), seed))
            .collect();
        assert!(random.iter().any(|&p| p < 50), "{random:?}");
        assert!(random.len() > 4);

        // Once we have random_first_pieces pieces, rarest first takes over.
        let mut pp = new_picker(&l, PickerConfig::default(), 5);
        pp.peer_has_all(A);
        pp.peer_bitfield(P2, &bits(100, 0..50));
        let mut firsts = Vec::new();
        while pp.have().count() < 4 {
            let got = pick(&mut pp, A, 1);
            firsts.extend(pieces_of(&got));
            deliver_and_verify(&mut pp, A, &got);
        }
        assert!(firsts.iter().any(|&p| p < 50), "{firsts:?}");
        for _ in 0..10 {
            let got = pick(&mut pp, A, 1);
            assert!(got[0].piece.0 >= 50);
            deliver_and_verify(&mut pp, A, &got);
        }
    }

    #[test]
    fn sequential_picks_in_index_order() {
        let l = layout(2 * B, &[10 * 2 * u64::from(B)]);
        // Sequential overrides random-first (default config has it on).
        let config = PickerConfig {
            sequential: true,
            ..PickerConfig::default()
        };
        let mut pp = new_picker(&l, config, 9);
        assert!(pp.is_sequential());
        pp.peer_has_all(A);
        pp.peer_bitfield(P2, &bits(10, 0..5)); // would make 5..10 "rarest"
        let got = pick(&mut pp, A, 5);
        assert_eq!(
            got.iter().map(|b| (b.piece.0, b.begin)).collect::<Vec<_>>(),
            [(0, 0), (0, B), (1, 0), (1, B), (2, 0)]
        );
        // A peer lacking piece 3 skips it.
        pp.peer_bitfield(P3, &bits(10, [2, 4, 5]));
        assert_eq!(pieces_of(&pick(&mut pp, P3, 3)), [2, 4]);
        // High priority comes before the next in order.
        pp.set_piece_priority(PieceIndex(8), Priority::High);
        assert_eq!(pieces_of(&pick(&mut pp, A, 2)), [8]);
        // Verified and Skip pieces are passed over.
        pp.set_piece_priority(PieceIndex(3), Priority::Skip);
        assert_eq!(pieces_of(&pick(&mut pp, A, 2)), [5]);
        // Back to rarest first: the non-sequential path picks among 6,7,9,
        // which nobody but the seed has.
        pp.set_sequential(false);
        let next = pieces_of(&pick(&mut pp, A, 1))[0];
        assert!([6, 7, 9].contains(&next), "{next}");
        // Turning piece 3 back on lowers the sequential start.
        pp.set_sequential(true);
        pp.set_piece_priority(PieceIndex(3), Priority::Normal);
        assert_eq!(pieces_of(&pick(&mut pp, A, 2))[0], next);
        assert_eq!(pieces_of(&pick(&mut pp, A, 1)), [3]);
    }

    #[test]
    fn priorities_high_first_and_skip_never() {
        let l = layout(B, &[6 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 4);
        pp.peer_has_all(A);
        pp.peer_bitfield(P2, &bits(6, [0, 1]));
        pp.peer_bitfield(P3, &bits(6, [4]));
        assert!(pp.is_interesting(P2));
        pp.set_piece_priority(PieceIndex(4), Priority::High);
        pp.set_piece_priority(PieceIndex(0), Priority::Skip);
        pp.set_piece_priority(PieceIndex(1), Priority::Skip);
        assert_eq!(pp.piece_priority(PieceIndex(1)), Priority::Skip);
        assert_eq!(pp.bytes_left(), 4 * u64::from(B));
        assert!(!pp.is_interesting(P2));
        assert!(pp.is_interesting(P3));
        // High beats rarer Normal pieces.
        assert_eq!(pieces_of(&pick(&mut pp, A, 1)), [4]);
        // Skip pieces are never picked, even when the peer has nothing else.
        assert!(pick(&mut pp, P2, 10).is_empty());
        let rest = pick(&mut pp, A, 10);
        assert_eq!(
            pieces_of(&rest).into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from([2, 3, 5])
        );
        let mut all = rest;
        all.push(Block {
            piece: PieceIndex(4),
            begin: 0,
            len: B,
        });
        deliver_and_verify(&mut pp, A, &all);
        assert!(pp.is_complete());
        assert_eq!(pp.bytes_left(), 0);
        assert!(!pp.in_endgame());
        assert!(!pp.is_interesting(A));
        // Wanting a skipped piece again reopens it.
        pp.set_piece_priority(PieceIndex(0), Priority::Normal);
        assert!(!pp.is_complete());
        assert!(pp.is_interesting(P2));
        assert_eq!(pieces_of(&pick(&mut pp, P2, 10)), [0]);
    }

    #[test]
    fn file_priorities_with_a_piece_spanning_two_files() {
        // Pieces of 2 blocks; files of 3 blocks: piece 1 spans both files.
        let l = layout(2 * B, &[3 * u64::from(B), 3 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 2);
        let prios = |pp: &PiecePicker| {
            (0..3)
                .map(|p| pp.piece_priority(PieceIndex(p)))
                .collect::<Vec<_>>()
        };
        use Priority::*;
        pp.set_file_priorities(&l, &[Skip, Normal]);
        assert_eq!(prios(&pp), [Skip, Normal, Normal]);
        assert_eq!(pp.bytes_left(), 4 * u64::from(B));
        pp.set_file_priorities(&l, &[High, Skip]);
        assert_eq!(prios(&pp), [High, High, Skip]);
        pp.set_file_priorities(&l, &[Skip, Skip]);
        assert_eq!(prios(&pp), [Skip, Skip, Skip]);
        assert!(pp.is_complete());
        assert_eq!(pp.bytes_left(), 0);
        pp.peer_has_all(A);
        assert!(!pp.is_interesting(A));
        assert!(pick(&mut pp, A, 10).is_empty());
        // Missing entries count as Normal.
        pp.set_file_priorities(&l, &[Skip]);
        assert_eq!(prios(&pp), [Skip, Normal, Normal]);
        let got = pick(&mut pp, A, 10);
        assert_eq!(
            pieces_of(&got).into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from([1, 2])
        );
    }

    #[test]
    fn allowed_fast_restricts_pieces() {
        let l = layout(2 * B, &[10 * 2 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 8);
        pp.peer_bitfield(A, &bits(10, [1, 2, 5, 6]));
        let allowed = [PieceIndex(5), PieceIndex(9), PieceIndex(5), PieceIndex(77)];
        let mut out = Vec::new();
        pp.pick(A, 10, Some(&allowed), &mut out);
        // 9 is not held by the peer, 77 does not exist.
        assert_eq!(pieces_of(&out), [5]);
        assert_eq!(out.len(), 2);
        out.clear();
        pp.pick(A, 10, Some(&allowed), &mut out);
        assert!(out.is_empty());
        // A verified piece is not picked either.
        pp.piece_verified(PieceIndex(6));
        pp.pick(A, 10, Some(&[PieceIndex(6)]), &mut out);
        assert!(out.is_empty());
        // Partial pieces obey the list too.
        pp.on_choked(A);
        pp.peer_has_all(P2);
        pp.pick(P2, 1, None, &mut out);
        let started = out[0].piece;
        assert_ne!(started, PieceIndex(1));
        out.clear();
        pp.pick(A, 10, Some(&[PieceIndex(1)]), &mut out);
        assert_eq!(pieces_of(&out), [1]);
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let l = layout(B, &[2 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 5);
        for peer in [A, P2, P3] {
            pp.peer_has_all(peer);
        }
        assert!(!pp.in_endgame());
        let a = pick(&mut pp, A, 5);
        assert_eq!(a.len(), 2);
        assert!(pp.in_endgame());
        let b = pick(&mut pp, P2, 5);
        assert_eq!(
            b.iter().collect::<BTreeSet<_>>(),
            a.iter().collect::<BTreeSet<_>>()
        );
        // Never twice to the same peer; never more than 2 requests a block.
        assert!(pick(&mut pp, A, 5).is_empty());
        assert!(pick(&mut pp, P3, 5).is_empty());
        assert_eq!(
            pp.on_block(A, a[0]),
            BlockOutcome::Accepted {
                piece_complete: true,
                cancel: vec![(P2, a[0])]
            }
        );
        assert_eq!(pp.in_flight(P2), 1);
        assert_eq!(pp.on_block(P2, a[0]), BlockOutcome::Unrequested);
        // P2's request for the other block fails: P3 may take its place.
        pp.on_request_failed(P2, a[1]);
        assert_eq!(pick(&mut pp, P3, 5), [a[1]]);
        assert_eq!(
            pp.on_block(P3, a[1]),
            BlockOutcome::Accepted {
                piece_complete: true,
                cancel: vec![(A, a[1])]
            }
        );
        assert_eq!(pp.in_flight(A), 0);
        pp.piece_verified(a[0].piece);
        pp.piece_verified(a[1].piece);
        assert!(pp.is_complete());
        assert!(!pp.in_endgame());
    }

    #[test]
    fn endgame_limit_of_one_means_no_duplicates() {
        let l = layout(B, &[2 * u64::from(B)]);
        let config = PickerConfig {
            endgame_max_requests_per_block: 1,
            ..rarest_config()
        };
        let mut pp = new_picker(&l, config, 5);
        pp.peer_has_all(A);
        pp.peer_has_all(P2);
        assert_eq!(pick(&mut pp, A, 5).len(), 2);
        assert!(pp.in_endgame());
        assert!(pick(&mut pp, P2, 5).is_empty());
    }

    #[test]
    fn endgame_only_when_every_wanted_block_is_requested() {
        let l = layout(B, &[3 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 5);
        pp.peer_bitfield(A, &bits(3, [0, 1]));
        pp.peer_bitfield(P2, &bits(3, [0, 1]));
        assert_eq!(pick(&mut pp, A, 5).len(), 2);
        // Piece 2 (held by nobody) is still wanted and unrequested.
        assert!(!pp.in_endgame());
        assert!(pick(&mut pp, P2, 5).is_empty());
        pp.set_piece_priority(PieceIndex(2), Priority::Skip);
        assert!(pp.in_endgame());
        assert_eq!(pick(&mut pp, P2, 5).len(), 2);
    }

    #[test]
    fn choke_and_departure_release_requests() {
        let l = layout(4 * B, &[4 * 4 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 6);
        pp.peer_has_all(A);
        pp.peer_has_all(P2);
        let a = pick(&mut pp, A, 6);
        assert_eq!(pp.in_flight(A), 6);
        assert_eq!(
            pp.requests_of(A),
            a.iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        pp.on_choked(A);
        assert_eq!(pp.in_flight(A), 0);
        assert!(pp.requests_of(A).is_empty());
        // Released blocks can be picked by anyone, A included.
        let b = pick(&mut pp, P2, 16);
        assert_eq!(b.len(), 16);
        assert!(a.iter().all(|x| b.contains(x)));
        assert!(pick(&mut pp, A, 16).len() <= 16);
        // A delivers a block it is no longer asked for: ignored.
        pp.on_choked(A);
        assert_eq!(pp.on_block(A, a[0]), BlockOutcome::Unrequested);

        // Departure: availability drops and requests are released.
        pp.peer_gone(P2);
        assert_eq!(pp.in_flight(P2), 0);
        assert!(!pp.is_interesting(P2));
        assert_eq!(pp.availability(PieceIndex(0)), 1);
        assert_eq!(pick(&mut pp, A, 16).len(), 16);
        pp.peer_gone(A);
        assert_eq!(pp.availability(PieceIndex(0)), 0);
        assert!(!pp.in_endgame());
        // A returning peer starts from scratch.
        pp.peer_bitfield(A, &bits(4, [2]));
        assert_eq!(pieces_of(&pick(&mut pp, A, 16)), [2]);
        assert_eq!(pp.on_block(PeerKey(99), a[0]), BlockOutcome::Unrequested);
        assert!(pick(&mut pp, PeerKey(99), 5).is_empty());
    }

    #[test]
    fn request_failed_makes_the_block_pickable_again() {
        let l = layout(2 * B, &[2 * 2 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 6);
        pp.peer_has_all(A);
        pp.peer_has_all(P2);
        let a = pick(&mut pp, A, 2);
        assert_eq!(pp.on_block(A, a[0]), accepted(false));
        pp.on_request_failed(A, a[1]);
        // Failing something never requested is harmless.
        pp.on_request_failed(A, a[1]);
        pp.on_request_failed(P2, a[0]);
        assert_eq!(pp.in_flight(A), 0);
        assert_eq!(pick(&mut pp, P2, 1), [a[1]]);
        assert_eq!(pp.on_block(P2, a[1]), accepted(true));
    }

    #[test]
    fn piece_failed_returns_contributors_and_refetches() {
        let l = layout(3 * B, &[2 * 3 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 12);
        pp.peer_has_all(A);
        pp.peer_has_all(P2);
        let a = pick(&mut pp, A, 2);
        let piece = a[0].piece;
        let b = pick(&mut pp, P2, 1);
        assert_eq!(b[0].piece, piece);
        assert_eq!(pp.on_block(A, a[0]), accepted(false));
        assert_eq!(pp.on_block(P2, b[0]), accepted(false));
        assert_eq!(pp.on_block(A, a[1]), accepted(true));
        assert_eq!(pp.piece_failed(piece), vec![A, P2]);
        assert!(!pp.have().get(piece));
        assert_eq!(pp.bytes_left(), 2 * 3 * u64::from(B));
        // All of its blocks are wanted again, from anyone.
        let again = pick(&mut pp, P2, 6);
        assert_eq!(again.iter().filter(|x| x.piece == piece).count(), 3);
        // A second failure reports only the new contributors.
        for &x in &again {
            if x.piece == piece {
                pp.on_block(P2, x);
            }
        }
        assert_eq!(pp.piece_failed(piece), vec![P2]);
        // Failing an untouched or verified piece reports nobody.
        let other = PieceIndex(1 - piece.0);
        assert!(pp.piece_failed(other).is_empty());
        pp.piece_verified(other);
        assert!(pp.piece_failed(other).is_empty());
        assert!(pp.have().get(other));
        assert!(pp.piece_failed(PieceIndex(1000)).is_empty());
        pp.piece_verified(PieceIndex(1000));
    }

    #[test]
    fn verifying_a_piece_mid_flight_withdraws_its_requests() {
        let l = layout(2 * B, &[2 * 2 * u64::from(B)]);
        let mut pp = new_picker(&l, rarest_config(), 12);
        pp.peer_has_all(A);
        let a = pick(&mut pp, A, 2);
        pp.piece_verified(a[0].piece);
        assert_eq!(pp.in_flight(A), 0);
        assert_eq!(pp.on_block(A, a[0]), BlockOutcome::Unrequested);
        assert_eq!(pp.bytes_left(), 2 * u64::from(B));
    }

    #[test]
    fn hostile_blocks_are_unrequested() {
        let l = layout(7 * B / 2, &[u64::from(7 * B / 2) * 2 + 100]);
        let mut pp = new_picker(&l, rarest_config(), 13);
        pp.peer_has_all(A);
        pp.peer_has_all(P2);
        let a = pick(&mut pp, A, 100);
        assert_eq!(a.len(), 9);
        let real = *a.iter().find(|b| b.begin == B && b.len == B).unwrap();
        let forged = [
            Block {
                len: real.len - 1,
                ..real
            },
            Block {
                len: real.len + 1,
                ..real
            },
            Block { len: 0, ..real },
            Block {
                begin: real.begin + 1,
                ..real
            },
            Block {
                begin: real.begin - 1,
                ..real
            },
            Block {
                begin: u32::MAX,
                ..real
            },
            Block {
                begin: 100 * B,
                ..real
            },
            Block {
                piece: PieceIndex(3),
                ..real
            },
            Block {
                piece: PieceIndex(u32::MAX),
                begin: u32::MAX,
                len: u32::MAX,
            },
            Block {
                piece: PieceIndex(2),
                begin: 0,
                len: B,
            },
            Block {
                piece: PieceIndex(2),
                begin: 0,
                len: 99,
            },
        ];
        for f in forged {
            assert_eq!(pp.on_block(A, f), BlockOutcome::Unrequested, "{f:?}");
        }
        // Requested from A, not from P2.
        assert_eq!(pp.on_block(P2, real), BlockOutcome::Unrequested);
        assert_eq!(pp.in_flight(A), 9);
        assert_eq!(pp.on_block(A, real), accepted(false));
        // Duplicate arrival.
        assert_eq!(pp.on_block(A, real), BlockOutcome::Unrequested);
        // Hostile requests to failure/has paths do not panic either.
        pp.on_request_failed(A, forged[8]);
        pp.peer_has(A, PieceIndex(u32::MAX));
        pp.set_piece_priority(PieceIndex(u32::MAX), Priority::High);
        pp.peer_bitfield(P3, &Bitfield::full(1000));
        pp.peer_bitfield(P4, &bits(2, [1]));
        assert_eq!(pp.availability(PieceIndex(1)), 4);
        assert_eq!(pp.availability(PieceIndex(u32::MAX)), 0);
        assert!(!pp.peer_has_piece(A, PieceIndex(3)));
        assert_eq!(pp.in_flight(A), 8);
    }

    #[test]
    fn resume_and_interest() {
        let l = layout(B, &[4 * u64::from(B) - 10]);
        let have = bits(4, [0, 3]);
        let mut pp = PiecePicker::new(&l, &have, rarest_config(), 1);
        assert_eq!(pp.have().count(), 2);
        assert_eq!(pp.bytes_left(), 2 * u64::from(B));
        pp.peer_bitfield(A, &bits(4, [0, 3]));
        assert!(!pp.is_interesting(A));
        assert!(pick(&mut pp, A, 4).is_empty());
        pp.peer_has(A, PieceIndex(2));
        assert!(pp.is_interesting(A));
        assert!(pp.peer_has_piece(A, PieceIndex(2)));
        assert!(!pp.peer_has_piece(A, PieceIndex(1)));
        // A full bitfield makes a seed.
        pp.peer_bitfield(P2, &Bitfield::full(4));
        assert!(pp.peer_has_piece(P2, PieceIndex(1)));
        assert_eq!(pp.availability(PieceIndex(0)), 2);
        let got = pick(&mut pp, P2, 4);
        assert_eq!(pieces_of(&got).len(), 2);
        deliver_and_verify(&mut pp, P2, &got);
        assert!(pp.is_complete());
        assert!(!pp.is_interesting(P2));
        assert!(!pp.is_interesting(A));
    }

    /// Simulated swarm: several peers with different pieces download a
    /// whole torrent with random arrival order, chokes, one peer leaving and
    /// one corrupt piece.
    #[test]
    fn full_download_with_random_arrivals_and_a_failed_piece() {
        let piece_len = 7 * B / 2; // 3.5 blocks
        let total = 36 * u64::from(piece_len) + 20000;
        let l = layout(piece_len, &[total - 5000, 5000]);
        assert_eq!(l.num_pieces(), 37);
        let n = l.num_pieces();
        let mut pp = new_picker(&l, PickerConfig::default(), 42);
        let mut rng = SplitMix64(4242);
        let peers: Vec<PeerKey> = (1..=5).map(PeerKey).collect();
        pp.peer_bitfield(peers[0], &bits(n, (0..n).filter(|p| p % 2 == 0)));
        pp.peer_bitfield(peers[1], &bits(n, (0..n).filter(|p| p % 2 == 1)));
        pp.peer_bitfield(peers[2], &bits(n, 0..n / 2));
        pp.peer_bitfield(peers[3], &bits(n, n / 2..n));
        pp.peer_has_all(peers[4]);
        let bad_piece = 17;
        let mut failed_once = false;
        let mut received: BTreeMap<Block, u32> = BTreeMap::new();
        let mut pending: BTreeMap<PeerKey, Vec<Block>> = BTreeMap::new();
        let mut rounds = 0;
        let mut saw_endgame = false;
        while !pp.is_complete() {
            rounds += 1;
            assert!(rounds < 10_000, "stuck: {pp:?}");
            if rounds == 40 {
                // The seed leaves; the others still cover everything.
                pp.peer_gone(peers[4]);
                pending.remove(&peers[4]);
            }
            for &peer in &peers {
                let queue = pending.entry(peer).or_default();
                let before = queue.len();
                let mut out = Vec::new();
                pp.pick(peer, 4usize.saturating_sub(before), None, &mut out);
                for b in &out {
                    assert!(pp.peer_has_piece(peer, b.piece));
                    assert!(!pp.have().get(b.piece));
                    assert!(!queue.contains(b));
                }
                queue.extend(out);
                assert_eq!(pp.in_flight(peer), queue.len());
            }
            saw_endgame |= pp.in_endgame();
            if rounds % 7 == 0 {
                // Peer 2 chokes us now and then.
                pp.on_choked(peers[2]);
                pending.insert(peers[2], Vec::new());
            }
            // Deliver a few random outstanding blocks.
            for _ in 0..3 {
                let live: Vec<PeerKey> = pending
                    .iter()
                    .filter(|(_, q)| !q.is_empty())
                    .map(|(&k, _)| k)
                    .collect();
                if live.is_empty() {
                    break;
                }
                let peer = live[rng.below(live.len())];
                let queue = pending.get_mut(&peer).unwrap();
                let block = queue.remove(rng.below(queue.len()));
                match pp.on_block(peer, block) {
                    BlockOutcome::Unrequested => panic!("{block:?} was requested"),
                    BlockOutcome::Accepted {
                        piece_complete,
                        cancel,
                    } => {
                        *received.entry(block).or_default() += 1;
                        for (other, b) in cancel {
                            assert_eq!(b, block);
                            let q = pending.get_mut(&other).unwrap();
                            q.retain(|x| *x != b);
                        }
                        if piece_complete {
                            if block.piece.0 == bad_piece && !failed_once {
                                failed_once = true;
                                let blamed = pp.piece_failed(block.piece);
                                assert!(blamed.contains(&peer));
                                received.retain(|b, _| b.piece.0 != bad_piece);
                            } else {
                                pp.piece_verified(block.piece);
                            }
                        }
                    }
                }
            }
        }
        assert!(failed_once);
        assert!(saw_endgame);
        assert_eq!(pp.bytes_left(), 0);
        assert!(pp.have().is_full());
        // Every block arrived exactly once, exactly as laid out.
        let mut expected = BTreeSet::new();
        for p in 0..n {
            let len = l.piece_len(PieceIndex(p)).unwrap();
            let mut begin = 0;
            while begin < len {
                expected.insert(Block {
                    piece: PieceIndex(p),
                    begin,
                    len: (len - begin).min(B),
                });
                begin += B;
            }
        }
        assert_eq!(received.keys().copied().collect::<BTreeSet<_>>(), expected);
        assert!(received.values().all(|&c| c == 1));
        let bytes: u64 = received.keys().map(|b| u64::from(b.len)).sum();
        assert_eq!(bytes, total);
        for &peer in &peers {
            assert_eq!(pp.in_flight(peer), 0, "{peer:?}");
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Bitfield(u8, Vec<bool>),
            HasAll(u8),
            Has(u8, u32),
            Gone(u8),
            Choke(u8),
            Pick(u8, usize, Option<Vec<u32>>),
            Deliver(u8, usize),
            Forge(u8, u32, u32, u32),
            Reject(u8, usize),
            Priority(u32, u8),
            Sequential(bool),
            Fail(u32),
            Verify(u32),
        }

        const PEERS: u8 = 4;
        const PIECES: u32 = 9;

        fn op() -> impl Strategy<Value = Op> {
            let peer = 0..PEERS;
            let piece = 0..PIECES + 2;
            prop_oneof![
                (
                    peer.clone(),
                    proptest::collection::vec(any::<bool>(), 0..12)
                )
                    .prop_map(|(p, v)| Op::Bitfield(p, v)),
                peer.clone().prop_map(Op::HasAll),
                (peer.clone(), piece.clone()).prop_map(|(p, i)| Op::Has(p, i)),
                peer.clone().prop_map(Op::Gone),
                peer.clone().prop_map(Op::Choke),
                (
                    peer.clone(),
                    0..20usize,
                    proptest::option::of(proptest::collection::vec(piece.clone(), 0..4))
                )
                    .prop_map(|(p, m, a)| Op::Pick(p, m, a)),
                (peer.clone(), any::<usize>()).prop_map(|(p, i)| Op::Deliver(p, i)),
                (peer.clone(), piece.clone(), 0..5 * B, 0..B + 2)
                    .prop_map(|(p, i, b, l)| Op::Forge(p, i, b, l)),
                (peer.clone(), any::<usize>()).prop_map(|(p, i)| Op::Reject(p, i)),
                (piece.clone(), 0..3u8).prop_map(|(i, p)| Op::Priority(i, p)),
                any::<bool>().prop_map(Op::Sequential),
                piece.clone().prop_map(Op::Fail),
                piece.prop_map(Op::Verify),
            ]
        }

        proptest! {
            #[test]
            fn random_operations_keep_invariants(
                ops in proptest::collection::vec(op(), 1..120),
                seed in any::<u64>(),
                limit in 1..4u32,
            ) {
                // 9 pieces of 2.5 blocks, last one short.
                let piece_len = 5 * B / 2;
                let l = layout(piece_len, &[8 * u64::from(piece_len) + 3000]);
                let config = PickerConfig {
                    random_first_pieces: 2,
                    endgame_max_requests_per_block: limit,
                    sequential: false,
                };
                let mut pp = new_picker(&l, config, seed);
                // Blocks handed out while in endgame: only these may be
                // requested from two peers at once.
                let mut endgame_blocks = BTreeSet::new();
                let mut complete_pieces = BTreeSet::new();
                let mut known: BTreeMap<PeerKey, Option<BTreeSet<u32>>> = BTreeMap::new();
                for op in ops {
                    match op {
                        Op::Bitfield(p, v) => {
                            let b = bits(PIECES, (0..PIECES).filter(|&i| v.get(i as usize) == Some(&true)));
                            pp.peer_bitfield(PeerKey(p.into()), &b);
                            known.insert(PeerKey(p.into()), Some(b.iter_set().map(|x| x.0).collect()));
                        }
                        Op::HasAll(p) => {
                            pp.peer_has_all(PeerKey(p.into()));
                            known.insert(PeerKey(p.into()), None);
                        }
                        Op::Has(p, i) => {
                            pp.peer_has(PeerKey(p.into()), PieceIndex(i));
                            if i < PIECES {
                                if let Some(set) = known.entry(PeerKey(p.into())).or_insert_with(|| Some(BTreeSet::new())) {
                                    set.insert(i);
                                }
                            }
                        }
                        Op::Gone(p) => {
                            pp.peer_gone(PeerKey(p.into()));
                            known.remove(&PeerKey(p.into()));
                        }
                        Op::Choke(p) => pp.on_choked(PeerKey(p.into())),
                        Op::Pick(p, max, allowed) => {
                            let peer = PeerKey(p.into());
                            let before = pp.requests_of(peer);
                            let allowed: Option<Vec<PieceIndex>> =
                                allowed.map(|a| a.into_iter().map(PieceIndex).collect());
                            let mut out = Vec::new();
                            pp.pick(peer, max, allowed.as_deref(), &mut out);
                            prop_assert!(out.len() <= max);
                            prop_assert_eq!(out.iter().collect::<BTreeSet<_>>().len(), out.len());
                            prop_assert_eq!(pp.in_flight(peer), before.len() + out.len());
                            for b in &out {
                                prop_assert!(pp.peer_has_piece(peer, b.piece));
                                prop_assert!(!pp.have().get(b.piece));
                                prop_assert!(pp.piece_priority(b.piece) != Priority::Skip);
                                prop_assert!(!before.contains(b));
                                if let Some(a) = &allowed {
                                    prop_assert!(a.contains(&b.piece));
                                }
                            }
                            if pp.in_endgame() {
                                endgame_blocks.extend(out.iter().copied());
                            }
                        }
                        Op::Deliver(p, i) => {
                            let peer = PeerKey(p.into());
                            let reqs = pp.requests_of(peer);
                            if !reqs.is_empty() {
                                let block = reqs[i % reqs.len()];
                                match pp.on_block(peer, block) {
                                    BlockOutcome::Accepted { piece_complete, cancel } => {
                                        for (other, b) in &cancel {
                                            prop_assert_eq!(*b, block);
                                            prop_assert!(*other != peer);
                                            prop_assert!(!pp.requests_of(*other).contains(b));
                                        }
                                        if piece_complete {
                                            complete_pieces.insert(block.piece.0);
                                        }
                                    }
                                    BlockOutcome::Unrequested => prop_assert!(false, "requested block refused"),
                                }
                                prop_assert_eq!(pp.on_block(peer, block), BlockOutcome::Unrequested);
                            }
                        }
                        Op::Forge(p, i, begin, len) => {
                            let peer = PeerKey(p.into());
                            let block = Block { piece: PieceIndex(i), begin, len };
                            let requested = pp.requests_of(peer).contains(&block);
                            let outcome = pp.on_block(peer, block);
                            prop_assert_eq!(requested, outcome != BlockOutcome::Unrequested);
                            if let BlockOutcome::Accepted { piece_complete: true, .. } = outcome {
                                complete_pieces.insert(i);
                            }
                        }
                        Op::Reject(p, i) => {
                            let peer = PeerKey(p.into());
                            let reqs = pp.requests_of(peer);
                            if !reqs.is_empty() {
                                pp.on_request_failed(peer, reqs[i % reqs.len()]);
                            }
                        }
                        Op::Priority(i, p) => {
                            let priority = [Priority::Skip, Priority::Normal, Priority::High][p as usize];
                            pp.set_piece_priority(PieceIndex(i), priority);
                        }
                        Op::Sequential(on) => pp.set_sequential(on),
                        Op::Fail(i) => {
                            let blamed = pp.piece_failed(PieceIndex(i));
                            let unique: BTreeSet<_> = blamed.iter().collect();
                            prop_assert_eq!(unique.len(), blamed.len());
                            complete_pieces.remove(&i);
                        }
                        Op::Verify(i) => {
                            // Only pieces whose blocks all arrived are verified.
                            if complete_pieces.remove(&i) {
                                pp.piece_verified(PieceIndex(i));
                            }
                        }
                    }

                    // Invariants.
                    let mut holders: BTreeMap<Block, u32> = BTreeMap::new();
                    for p in 0..PEERS + 1 {
                        let peer = PeerKey(p.into());
                        let reqs = pp.requests_of(peer);
                        prop_assert_eq!(pp.in_flight(peer), reqs.len());
                        let unique: BTreeSet<_> = reqs.iter().collect();
                        prop_assert_eq!(unique.len(), reqs.len());
                        for b in reqs {
                            prop_assert!(b.len > 0 && b.len <= B && b.begin % B == 0);
                            prop_assert!(b.begin + b.len <= pp.piece_len(b.piece));
                            *holders.entry(b).or_default() += 1;
                        }
                        let wanted_held = (0..PIECES).any(|i| {
                            pp.peer_has_piece(peer, PieceIndex(i))
                                && !pp.have().get(PieceIndex(i))
                                && pp.piece_priority(PieceIndex(i)) != Priority::Skip
                        });
                        prop_assert_eq!(pp.is_interesting(peer), wanted_held);
                    }
                    for (b, count) in &holders {
                        if *count > 1 {
                            prop_assert!(endgame_blocks.contains(b), "{:?} requested {} times outside endgame", b, count);
                            prop_assert!(*count <= limit.max(1));
                        }
                    }
                    let mut bytes_left = 0;
                    for i in 0..PIECES {
                        let piece = PieceIndex(i);
                        let holders = known
                            .values()
                            .filter(|set| set.as_ref().is_none_or(|s| s.contains(&i)))
                            .count();
                        prop_assert_eq!(pp.availability(piece) as usize, holders);
                        if !pp.have().get(piece) && pp.piece_priority(piece) != Priority::Skip {
                            bytes_left += u64::from(pp.piece_len(piece));
                        }
                    }
                    prop_assert_eq!(pp.bytes_left(), bytes_left);
                    prop_assert_eq!(pp.is_complete(), bytes_left == 0);
                }
            }
        }
    }
}
