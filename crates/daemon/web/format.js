// Numbers for people: sizes, rates, durations, dates.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${UNITS[i]}`;
}

export function rate(n) {
  if (!n || n < 1) return '0 B/s';
  return `${bytes(Math.round(n))}/s`;
}

export function percent(p) {
  if (p === null || p === undefined) return '–';
  const v = p * 100;
  return `${v >= 100 ? 100 : v.toFixed(v < 10 ? 1 : 0)}%`;
}

export function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return '–';
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function date(epoch) {
  if (!epoch) return '–';
  return new Date(epoch * 1000).toLocaleString();
}

export function ratio(up, down) {
  if (!down) return up ? '∞' : '0.00';
  return (up / down).toFixed(2);
}

export const STATES = {
  metadata: 'Fetching metadata',
  checking: 'Checking',
  downloading: 'Downloading',
  seeding: 'Seeding',
  stopped: 'Stopped',
};

export function stateName(t) {
  if (t.error) return 'Error';
  return STATES[t.state] || t.state;
}
