// Human-readable times, durations and sizes.

const UNITS = [
  ['year', 365 * 86400],
  ['day', 86400],
  ['hour', 3600],
  ['minute', 60],
  ['second', 1],
];

const plural = (n, unit) => `${n} ${unit}${n === 1 ? '' : 's'}`;

/**
 * A duration in seconds, in at most two adjacent units: 345600 → "4 days", 90000 → "1 day
 * 1 hour". `exact` is false when smaller units were left out.
 */
export function duration(seconds) {
  let rest = Math.floor(seconds);
  const parts = [];
  for (const [unit, size] of UNITS) {
    if (parts.length === 2) break;
    const n = Math.floor(rest / size);
    if (n > 0) {
      parts.push(plural(n, unit));
      rest -= n * size;
    } else if (parts.length === 1) {
      break;
    }
  }
  return { text: parts.length ? parts.join(' ') : '0 seconds', exact: rest === 0 };
}

/**
 * The live echo beside "Valid for (seconds)": "never expires", "= 4 days", or what is wrong.
 */
export function ttlEcho(raw) {
  const text = String(raw).trim();
  if (text === '' || Number(text) === 0) return 'never expires';
  const n = Number(text);
  if (!Number.isFinite(n)) return 'not a number';
  if (n < 0) return 'must not be negative (0 = never)';
  if (!Number.isInteger(n)) return 'whole seconds only';
  const { text: words, exact } = duration(n);
  return `${exact ? '=' : '≈'} ${words}`;
}

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'always' });

/** "in 3 days", "5 minutes ago", "just now" (one unit, rounded down). */
export function relative(iso, now = Date.now()) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return '';
  const diff = Math.round((then - now) / 1000);
  const abs = Math.abs(diff);
  // Seconds either way are clock skew between browser and server, not information.
  if (abs < 45) return 'just now';
  for (const [unit, size] of UNITS) {
    // A little slack, so a key valid for 365 days reads "in 1 year" a second after it was
    // created, not "in 364 days".
    const slack = Math.min(60, size / 2);
    if (abs + slack >= size) {
      const n = Math.floor((abs + slack) / size);
      return rtf.format(diff < 0 ? -n : n, unit);
    }
  }
  return '';
}

/** The "Expires" column: "never", "expired", or "in 3 days". */
export function expires(iso, now = Date.now()) {
  if (!iso) return 'never';
  const left = Date.parse(iso) - now;
  if (left <= 0) return 'expired';
  return left < 60_000 ? 'in under a minute' : relative(iso, now);
}

/** "2026-11-26 21:31 UTC" — exact, for tooltips and detail lists. */
export function exact(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** 1536 → "1.5 KiB". */
export function bytes(n) {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(n) || 0;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  if (i === 0) return value === 1 ? '1 byte' : `${value} bytes`;
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[i]}`;
}

export const number = (n) => new Intl.NumberFormat('en').format(Number(n) || 0);
