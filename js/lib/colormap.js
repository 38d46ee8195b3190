// Pure functions that turn an attribution map into RGBA pixels.
//
// Nothing here touches the DOM, so every function can be unit tested on typed
// arrays. The conventions mirror critpath_widgets/widgets/overlay.py
// (`colorize`, `normalised_vmax`): keep both in step.

export const SIGN_MODES = ["signed", "positive", "negative", "absolute"];

/** Size in bytes of one colormap's lookup table: 256 RGBA entries. */
export const LUT_BYTES = 256 * 4;

/**
 * View any binary payload (DataView, ArrayBuffer, typed array) as a Uint8Array
 * over the same bytes, without copying.
 */
export function asBytes(buf) {
  if (buf == null) return new Uint8Array(0);
  if (buf instanceof Uint8Array) return buf;
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  if (ArrayBuffer.isView(buf)) return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  // SharedArrayBuffer or an ArrayBuffer from another realm (iframe, jsdom)
  if (typeof buf.byteLength === "number") return new Uint8Array(buf);
  throw new TypeError("expected binary data (DataView, ArrayBuffer or typed array)");
}

/**
 * Decode float32 little-endian, row-major bytes of shape [h, w].
 * Returns a fresh Float32Array of h*w values, or throws an Error whose message
 * says what does not fit.
 */
export function decodeValues(buf, shape) {
  const bytes = asBytes(buf);
  const [h, w] = shape || [0, 0];
  if (!(h >= 0 && w >= 0)) throw new Error(`bad shape ${JSON.stringify(shape)}`);
  const n = h * w;
  if (bytes.byteLength !== n * 4) {
    throw new Error(`values hold ${bytes.byteLength} bytes but shape ${h}x${w} needs ${n * 4}`);
  }
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
  return out;
}

/**
 * The magnitudes a sign mode shows, nonzero and finite only, sorted ascending:
 * signed/absolute -> |v|; positive -> v for v > 0; negative -> -v for v < 0.
 */
export function shownMagnitudes(values, sign) {
  const tmp = new Float32Array(values.length);
  let k = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    let m;
    if (sign === "positive") m = v > 0 ? v : 0;
    else if (sign === "negative") m = v < 0 ? -v : 0;
    else m = Math.abs(v);
    if (m > 0) tmp[k++] = m;
  }
  return tmp.subarray(0, k).sort();
}

/** numpy-style percentile (linear interpolation) of an ascending array; p in [0, 100]. */
export function percentileSorted(sorted, p) {
  const n = sorted.length;
  if (n === 0) return NaN;
  const q = Math.min(100, Math.max(0, p));
  const pos = (q / 100) * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/**
 * The value mapped to the end of the colour scale: the `clipPercentile`
 * percentile of the nonzero magnitudes the sign mode shows; 1 when there are
 * none (an all-zero map) so that we never divide by 0.
 * `sortedMagnitudes` is the output of shownMagnitudes (pass it to reuse a cache).
 */
export function computeVmax(sortedMagnitudes, clipPercentile) {
  const v = percentileSorted(sortedMagnitudes, clipPercentile);
  return Number.isFinite(v) && v > 0 ? v : 1;
}

/**
 * Map one value to [0, 1] of the LUT.
 * signed: (v / vmax + 1) / 2; positive: max(v, 0) / vmax; negative: max(-v, 0) / vmax;
 * absolute: |v| / vmax; all clipped to [0, 1].
 */
export function normalise(v, sign, vmax) {
  let t;
  switch (sign) {
    case "positive":
      t = Math.max(v, 0) / vmax;
      break;
    case "negative":
      t = Math.max(-v, 0) / vmax;
      break;
    case "absolute":
      t = Math.abs(v) / vmax;
      break;
    default:
      t = (v / vmax + 1) / 2;
  }
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

/** LUT row of t in [0, 1], as matplotlib does it: floor(t * 256), with 1.0 -> 255. */
export function lutIndex(t) {
  const i = Math.floor(t * 256);
  return i < 0 ? 0 : i > 255 ? 255 : i;
}

/**
 * Build RGBA pixels (length values.length * 4) for the map.
 *
 * Colour: lut[lutIndex(normalise(v))]. Alpha (fade, the overlay): opacity * the
 * LUT's alpha * the normalised magnitude to the power gamma (|v| / vmax, clipped
 * to 1; in the one-sided modes that is t itself, in "signed" mode |2t - 1|), so
 * zero attribution leaves the image visible and only strong pixels cover it.
 * Without fade (the map alone): the LUT's alpha. Non-finite values are
 * transparent. Python's colormaps.colorize follows the same rule.
 *
 * @param {Float32Array} values map values
 * @param {Uint8Array} lut 256 * 4 bytes RGBA
 * @param {{sign: string, opacity: number, vmax: number, fade: boolean, gamma: number}} opts
 * @param {Uint8ClampedArray} [out] optional output buffer to fill
 */
export function colorize(
  values,
  lut,
  { sign = "signed", opacity = 1, vmax = 1, fade = true, gamma = 1 } = {},
  out,
) {
  const n = values.length;
  const rgba = out || new Uint8ClampedArray(n * 4);
  const op = Math.min(1, Math.max(0, Number(opacity) || 0));
  const vm = vmax > 0 && Number.isFinite(vmax) ? vmax : 1;
  const g = gamma > 0 && Number.isFinite(gamma) ? gamma : 1;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    const o = i * 4;
    if (!Number.isFinite(v)) {
      rgba[o] = rgba[o + 1] = rgba[o + 2] = rgba[o + 3] = 0;
      continue;
    }
    const t = normalise(v, sign, vm);
    const j = lutIndex(t) * 4;
    rgba[o] = lut[j];
    rgba[o + 1] = lut[j + 1];
    rgba[o + 2] = lut[j + 2];
    if (!fade) {
      rgba[o + 3] = lut[j + 3];
      continue;
    }
    const mag = sign === "signed" ? Math.abs(2 * t - 1) : t;
    const a = (lut[j + 3] / 255) * op * (g === 1 ? mag : mag ** g);
    rgba[o + 3] = Math.round(a * 255);
  }
  return rgba;
}

/** A 256-entry grey ramp, used when no LUT is available. */
export function grayLut() {
  const lut = new Uint8Array(LUT_BYTES);
  for (let i = 0; i < 256; i++) {
    lut[i * 4] = lut[i * 4 + 1] = lut[i * 4 + 2] = i;
    lut[i * 4 + 3] = 255;
  }
  return lut;
}

/**
 * The LUT of `name` out of the packed `luts` bytes (len(names) x 256 x 4), or
 * null when the name is not listed or the bytes are short.
 */
export function pickLut(luts, names, name) {
  const bytes = asBytes(luts);
  const k = (names || []).indexOf(name);
  if (k < 0 || bytes.byteLength < (k + 1) * LUT_BYTES) return null;
  return bytes.subarray(k * LUT_BYTES, (k + 1) * LUT_BYTES);
}

/** Ends of the colour bar as values: [left, right] for the sign mode. */
export function scaleEnds(sign, vmax) {
  switch (sign) {
    case "positive":
      return [0, vmax];
    case "negative":
      return [0, -vmax];
    case "absolute":
      return [0, vmax];
    default:
      return [-vmax, vmax];
  }
}

/** Short, readable number: 3 significant digits, exponent form when far from 1. */
export function formatNumber(x) {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e4 || a < 1e-3) return x.toExponential(2);
  return String(Number(x.toPrecision(3)));
}
