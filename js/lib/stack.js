// The scrub stack: display maps at a grid of sparsities, uint8-coded per level
// (critpath_widgets/widgets/stack_codec.py): code q of level k decodes to
// (q - zero_k) * scale_k, with ranges = [scale_0, zero_0, scale_1, zero_1, ...].
// A level is decoded on first use and kept (with its sorted magnitudes per sign).

import { asBytes } from "./colormap.js";

/** Decode level `k` of a (K, h, w) uint8 stack to a Float32Array of h * w. */
export function decodeLevel(bytes, ranges, k, h, w) {
  const n = h * w;
  const scale = Number(ranges[2 * k]);
  const zero = Number(ranges[2 * k + 1]);
  const codes = new Uint8Array(bytes.buffer, bytes.byteOffset + k * n, n);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (codes[i] - zero) * scale;
  return out;
}

/** Index of the level nearest to `s` (the lower one on a tie); -1 for no levels. */
export function nearestLevel(levels, s) {
  let best = -1;
  let bestD = Infinity;
  for (let i = 0; i < levels.length; i++) {
    const d = Math.abs(Number(levels[i]) - s);
    if (d < bestD - 1e-12) {
      best = i;
      bestD = d;
    }
  }
  return best;
}

/** Holder of the model's stack traits with a per-level decode cache. */
export function createStack() {
  const st = { version: 0, src: null, bytes: null, levels: [], ranges: [], sign: "", smooth: -1, cache: new Map() };

  /** Re-read the traits; a changed stack drops the decoded levels. */
  st.read = (model) => {
    const src = model.get("stack");
    const levels = model.get("stack_levels") || [];
    const ranges = model.get("stack_ranges") || [];
    const sign = model.get("stack_sign") || "";
    const smooth = Number(model.get("stack_smooth"));
    if (src === st.src && levels === st.levels && ranges === st.ranges && sign === st.sign && smooth === st.smooth) {
      return;
    }
    Object.assign(st, { src, levels, ranges, sign, smooth, bytes: asBytes(src), cache: new Map() });
    st.version++;
  };

  /**
   * The level to paint for `preview` over an exact map of `exact` sparsity, or null:
   * only while they differ and the stack fits the map (h, w) and the view's sign and blur.
   */
  st.pick = (preview, exact, h, w, sign, smooth) => {
    const k = st.levels.length;
    if (!(preview >= 0) || !(exact >= 0) || Math.abs(preview - exact) < 1e-6) return null;
    if (!k || !st.bytes || st.bytes.byteLength !== k * h * w || h * w === 0) return null;
    if (st.sign !== sign || Math.abs(st.smooth - smooth) > 1e-9) return null;
    if (2 * k !== st.ranges.length) return null;
    const i = nearestLevel(st.levels, preview);
    if (!st.cache.has(i)) st.cache.set(i, { values: decodeLevel(st.bytes, st.ranges, i, h, w), mags: {} });
    const lv = st.cache.get(i);
    return { index: i, sparsity: Number(st.levels[i]), values: lv.values, mags: lv.mags, tag: `s${st.version}:${i}` };
  };

  return st;
}
