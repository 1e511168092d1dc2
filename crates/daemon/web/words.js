// The API's numbers in words: the sources table's rows and why a magnet's
// metadata has not arrived (the same logic as `diagnose()` in
// crates/lodestone/src/words.rs, worded for the daemon's configuration).

const NAMES = {
  dht: 'DHT',
  pex: 'Peer Exchange (PEX)',
  lpd: 'Local Peer Discovery (LPD)',
  given: 'Given peers',
  incoming: 'Incoming',
};

export function sourceName(row) {
  return row.kind === 'tracker' ? row.url : NAMES[row.kind] || row.kind;
}

const OFF = {
  dht: 'switched off (see [dht] enabled in the configuration)',
  pex: 'switched off (see [peers] pex in the configuration)',
  lpd: 'switched off (see [peers] lpd in the configuration)',
  tracker: 'trackers switched off',
};

/** "working", "disabled: private torrent", "waiting: ..." */
export function sourceStatus(row) {
  const s = row.state || {};
  switch (s.status) {
    case 'disabled':
      return `disabled: ${s.why === 'switched off' ? OFF[row.kind] || s.why : s.why}`;
    case 'starting':
      return row.kind === 'dht' ? 'searching…' : 'starting…';
    case 'waiting':
      return `waiting: ${s.why}`;
    case 'working':
      if (s.queries !== undefined && s.responses === 0) {
        return s.queries === 0
          ? 'not working: no DHT node to ask (bootstrap unreachable?)'
          : `not working: 0 of ${s.queries} nodes answered (bootstrap unreachable?)`;
      }
      return 'working';
    default:
      return s.status || '–';
  }
}

/** What the source's last round did, in numbers. */
export function lastResult(row) {
  const s = row.state || {};
  if (s.queries !== undefined) {
    let t = `get_peers: ${s.queries} queried, ${s.responses} answered, ${s.peers} peers`;
    if (s.announced) t += `, announced to ${s.announced.ok}/${s.announced.of}`;
    return t;
  }
  if (s.exchanging_with !== undefined) return `exchanging with ${s.exchanging_with} peers`;
  if (s.given !== undefined) return `${s.given} addresses given (x.pe or the add)`;
  if (s.listening !== undefined) return `listening on ${s.listening}`;
  if (s.message !== undefined) {
    let t = s.message;
    if (s.seeders !== undefined && s.seeders !== null) t += `; swarm: ${s.seeders} seeders`;
    if (s.leechers !== undefined && s.leechers !== null) t += `, ${s.leechers} leechers`;
    return t;
  }
  return '–';
}

/** Why the metadata has not arrived, as sentences a person can act on. */
export function diagnose(m) {
  const out = [];
  if (m.dht_enabled) {
    const r = m.dht;
    if (!r) out.push('DHT: first lookup still running');
    else if (r.queries === 0)
      out.push('DHT: no node to ask: the bootstrap nodes did not resolve or answer');
    else if (r.responses === 0)
      out.push(`DHT: 0 of ${r.queries} nodes answered: bootstrap unreachable`);
    else if (r.peers === 0)
      out.push(
        `DHT: ${r.responses} nodes answered but none knows a peer for this info hash (nobody announced it yet)`,
      );
    else out.push(`DHT: ${r.responses} nodes answered, ${r.peers} peers returned`);
  } else {
    out.push(
      'DHT: off (set [dht] enabled = true in the daemon\'s configuration, with bootstrap nodes it can reach)',
    );
  }
  if (m.peers_found === 0) {
    out.push('no peer addresses known yet');
  } else if (m.handshaken === 0) {
    out.push(
      `${m.peers_found} peers found, ${m.attempts} connection attempts, ${m.failed} failed, none completed a BitTorrent handshake`,
    );
  } else if (m.with_ut_metadata === 0) {
    out.push(`${m.handshaken} peers connected, none supports ut_metadata (BEP 9)`);
  } else if (m.size === null || m.size === undefined) {
    // Those refused for their size did tell it (said below).
    const unsized = Math.max(0, m.with_ut_metadata - m.refused_size);
    if (unsized > 0) out.push(`${unsized} peers support ut_metadata but none told the metadata size`);
  } else {
    out.push(
      `metadata ${m.pieces_done}/${m.pieces} pieces from ${m.with_ut_metadata} peers with ut_metadata`,
    );
  }
  if (m.banned > 0) out.push(`${m.banned} peer(s) banned for bad metadata`);
  if (m.refused_size > 0) out.push(`${m.refused_size} peer(s) refused: metadata size above the limit`);
  return out;
}

/** A peer's flags, qBittorrent's letters, and what each means. */
export const FLAG_LEGEND = [
  ['D', 'downloading from it (we are interested, it unchokes us)'],
  ['d', 'we are interested, it chokes us'],
  ['U', 'uploading to it (it is interested, we unchoke it)'],
  ['u', 'it is interested, we choke it'],
  ['S', 'snubbed: sent nothing for a while'],
  ['E', 'encrypted connection (MSE/PE)'],
  ['I', 'incoming: it dialled us'],
  ['H', 'found by the DHT'],
  ['X', 'found by peer exchange (PEX)'],
  ['L', 'found by local peer discovery (LPD)'],
  ['T', 'found by a tracker'],
  ['G', 'given: in the magnet (x.pe) or added by hand'],
];

export function peerFlags(p) {
  let f = '';
  if (p.am_interested) f += p.peer_choking ? 'd' : 'D';
  if (p.peer_interested) f += p.am_choking ? 'u' : 'U';
  if (p.snubbed) f += 'S';
  if (p.encrypted) f += 'E';
  if (p.source === 'incoming') f += 'I';
  const found = p.found_by || [];
  if (found.includes('dht')) f += 'H';
  if (found.includes('pex')) f += 'X';
  if (found.includes('lpd')) f += 'L';
  if (found.includes('tracker')) f += 'T';
  if (found.includes('manual')) f += 'G';
  return f;
}
