// Charts of query results: uPlot (canvas) for time series and the histogram, plain HTML bars for
// categories. Every chart is drawn from the same `{columns, rows}` table the API returns, and a
// click on a series, a bucket or a bar drills into the events behind it.

import { html, useEffect, useRef } from '../vendor/preact-htm.mjs';
import { display, formatTime, micros } from './query.js';

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
  '#17becf', '#7f7f7f', '#bcbd22', '#393b79', '#ad494a'];

/** The most series a line chart draws; the rest are summed into "other". */
const MAX_SERIES = 12;

const isTimeText = (v) => typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v);

/**
 * How a result table is laid out: its time column (if any), its group columns (text) and its
 * value columns (numbers).
 */
export function shape(result) {
  const columns = result.columns || [];
  const rows = result.rows || [];
  const sample = rows.slice(0, 50);
  const times = columns.filter((c) => sample.length && sample.every((r) => r[c] === null || isTimeText(r[c])));
  const values = columns.filter((c) => !times.includes(c) && sample.length && sample.every((r) => r[c] === null || typeof r[c] === 'number'));
  const groups = columns.filter((c) => !times.includes(c) && !values.includes(c));
  return { time: times[0], times, values, groups };
}

/** The label of a row's group: its group columns' values joined. */
export const groupLabel = (row, groups) => (groups.length ? groups.map((g) => display(g, row[g]) || '(empty)').join(' · ') : 'all');

/**
 * Long rows (time, group…, value…) → uPlot's columns: x in seconds, one series per group and
 * value column, the largest first, the tail summed as "other".
 */
export function pivot(result) {
  const { time, values, groups } = shape(result);
  const xs = [...new Set(result.rows.map((r) => r[time]))].sort();
  const index = new Map(xs.map((x, i) => [x, i]));
  const series = new Map();
  for (const row of result.rows) {
    for (const v of values) {
      const label = values.length > 1 ? `${groupLabel(row, groups)} ${v}`.replace(/^all /, '') : groupLabel(row, groups);
      let s = series.get(label);
      if (!s) {
        s = { label, value: v, group: Object.fromEntries(groups.map((g) => [g, row[g]])), data: new Array(xs.length).fill(null), total: 0 };
        series.set(label, s);
      }
      const n = row[v];
      s.data[index.get(row[time])] = n;
      s.total += typeof n === 'number' ? n : 0;
    }
  }
  let list = [...series.values()].sort((a, b) => b.total - a.total);
  if (list.length > MAX_SERIES && values.length === 1 && /^(count|sum)/.test(values[0])) {
    const rest = list.slice(MAX_SERIES - 1);
    const other = { label: `other (${rest.length})`, value: values[0], group: null, data: new Array(xs.length).fill(null), total: 0 };
    for (const s of rest) s.data.forEach((n, i) => { if (n !== null) other.data[i] = (other.data[i] || 0) + n; });
    list = [...list.slice(0, MAX_SERIES - 1), other];
  } else {
    list = list.slice(0, MAX_SERIES);
  }
  return { x: xs.map((t) => micros(t) / 1e6), xText: xs, series: list, valueColumn: values[0] };
}

function useSize(ref) {
  const width = () => Math.max(300, (ref.current && ref.current.clientWidth) || 800);
  return width;
}

/**
 * A uPlot chart. `kind`: line, area or bar. `onPick(seriesIndex|null, bucketIndex)` on a
 * click; `onZoom(fromSeconds, toSeconds)` on a drag.
 */
export function TimeChart({ x, series, kind = 'line', height = 260, onPick, onZoom, label, format }) {
  const box = useRef(null);
  const width = useSize(box);
  useEffect(() => {
    if (!box.current || !window.uPlot || !x.length) return undefined;
    const uPlot = window.uPlot;
    let focused = null;
    const bars = kind === 'bar' ? uPlot.paths.bars({ size: [0.85, 60] }) : undefined;
    const opts = {
      width: width(),
      height,
      cursor: { drag: { x: !!onZoom, y: false, setScale: false }, focus: { prox: 16 } },
      focus: { alpha: 0.35 },
      legend: { show: series.length > 1 || kind !== 'bar' },
      // Times in UTC, as the events and the table show them.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
      scales: { x: { time: true } },
      axes: [{ values: (u, ticks) => timeTicks(ticks), space: 70 }, { values: (u, ticks) => ticks.map((t) => (format ? format(t) : compact(t))), size: 70 }],
      series: [{ value: (u, v) => (v === null ? '' : new Date(v * 1000).toISOString().replace('T', ' ').slice(0, 19)) },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: PALETTE[i % PALETTE.length],
          fill: kind === 'line' ? undefined : PALETTE[i % PALETTE.length] + (kind === 'bar' ? 'cc' : '33'),
          width: kind === 'bar' ? 0 : 1.5,
          paths: bars,
          points: { show: false },
          spanGaps: false,
          value: (u, v) => (v === null ? '—' : format ? format(v) : String(v)),
        }))],
      hooks: {
        setSeries: [(u, i) => { focused = i; }],
        setSelect: [(u) => {
          if (u.select.width > 2 && onZoom) {
            const from = u.posToVal(u.select.left, 'x');
            const to = u.posToVal(u.select.left + u.select.width, 'x');
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            onZoom(from, to);
          }
        }],
      },
    };
    const plot = new uPlot(opts, [x, ...series.map((s) => s.data)], box.current);
    plot.root.setAttribute('role', 'img');
    plot.root.setAttribute('aria-label', label || 'chart');
    const click = () => {
      if (plot.select.width > 2 || !onPick) return;
      const idx = plot.cursor.idx;
      if (idx === null || idx === undefined) return;
      onPick(focused && focused > 0 ? focused - 1 : series.length === 1 ? 0 : null, idx);
    };
    plot.over.addEventListener('click', click);
    const resize = new ResizeObserver(() => plot.setSize({ width: width(), height }));
    resize.observe(box.current);
    return () => { resize.disconnect(); plot.destroy(); };
  }, [x, series, kind, height]);
  return html`<div class="uplot-box" ref=${box}></div>`;
}

/** Time axis labels in UTC, 24-hour: the date where it changes, the time at the tick's grain. */
function timeTicks(ticks) {
  const grain = ticks.length > 1 ? ticks[1] - ticks[0] : 60;
  let day = null;
  return ticks.map((t) => {
    const iso = new Date(t * 1000).toISOString();
    const date = iso.slice(5, 10);
    const time = grain >= 86400 ? '' : grain >= 60 ? iso.slice(11, 16) : iso.slice(11, 19);
    const label = date !== day ? `${date} ${time}`.trim() : time;
    day = date;
    return label;
  });
}

/** Numbers for axes: 1.2k, 3.4M. */
export function compact(n) {
  if (n === null || n === undefined) return '';
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (n / 1e3).toFixed(0) + 'k';
  if (a >= 1e3) return (n / 1e3).toFixed(1) + 'k';
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

/** Horizontal bars of one value column by group; a click on a label drills into the group. */
export function BarList({ rows, groups, value, onPick, format }) {
  const max = Math.max(1, ...rows.map((r) => Number(r[value]) || 0));
  return html`<ul class="bars" aria-label=${`${value} by ${groups.join(', ')}`}>
    ${rows.slice(0, 200).map((row, i) => html`<li key=${i}>
      <button class="link label" title=${groupLabel(row, groups)} onClick=${() => onPick && onPick(row)}>${groupLabel(row, groups)}</button>
      <span class="track"><span class="fill" ref=${(el) => el && (el.style.width = `${(100 * (Number(row[value]) || 0)) / max}%`)}></span></span>
      <span class="num">${format ? format(row[value]) : compact(row[value])}</span>
    </li>`)}
  </ul>`;
}

/** The result table itself; group cells are buttons that drill down. */
export function ResultTable({ result, onPick }) {
  const { groups } = shape(result);
  return html`<table class="grid" aria-label="Query results">
    <thead><tr>${result.columns.map((c) => html`<th scope="col" class=${typeof (result.rows[0] || {})[c] === 'number' ? 'num' : ''}>${c}</th>`)}</tr></thead>
    <tbody>${result.rows.slice(0, 5000).map((row, i) => html`<tr key=${i}>
      ${result.columns.map((c) => {
        const v = row[c];
        if (groups.includes(c) && onPick) return html`<td><button class="link" onClick=${() => onPick(row)}>${display(c, v) || '(empty)'}</button></td>`;
        return html`<td class=${typeof v === 'number' ? 'num' : ''}>${isTimeText(v) ? formatTime(v) : display(c, v)}</td>`;
      })}
    </tr>`)}</tbody>
  </table>`;
}
