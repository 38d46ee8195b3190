import { describe, expect, it } from "vitest";
import {
  asBytes,
  colorize,
  computeVmax,
  decodeValues,
  formatNumber,
  lutIndex,
  normalise,
  percentileSorted,
  pickLut,
  scaleEnds,
  shownMagnitudes,
} from "../lib/colormap.js";
import { colorbarLabels, colorbarPixels } from "../lib/colorbar.js";
import { f32View, rampLut } from "./helpers.js";

describe("decodeValues", () => {
  it("reads float32 little-endian row-major bytes from a DataView", () => {
    const v = decodeValues(f32View([1.5, -2, 0, 3.25, 4, 5]), [2, 3]);
    expect(Array.from(v)).toEqual([1.5, -2, 0, 3.25, 4, 5]);
  });
  it("reads from an unaligned offset", () => {
    const buf = new Uint8Array(9);
    new DataView(buf.buffer).setFloat32(1, -0.75, true);
    new DataView(buf.buffer).setFloat32(5, 2.5, true);
    expect(Array.from(decodeValues(buf.subarray(1), [1, 2]))).toEqual([-0.75, 2.5]);
  });
  it("rejects a length that does not fit the shape", () => {
    expect(() => decodeValues(f32View([1, 2, 3]), [2, 2])).toThrow(/12 bytes.*2x2 needs 16/);
  });
  it("asBytes accepts ArrayBuffer, DataView and typed arrays", () => {
    const ab = new Uint8Array([1, 2, 3]).buffer;
    expect(Array.from(asBytes(ab))).toEqual([1, 2, 3]);
    expect(Array.from(asBytes(new DataView(ab, 1)))).toEqual([2, 3]);
    expect(asBytes(null).byteLength).toBe(0);
  });
});

describe("vmax from percentile clipping", () => {
  it("percentile interpolates linearly like numpy", () => {
    const s = Float32Array.from([1, 2, 3, 4]);
    expect(percentileSorted(s, 50)).toBeCloseTo(2.5);
    expect(percentileSorted(s, 100)).toBe(4);
    expect(percentileSorted(s, 0)).toBe(1);
    expect(percentileSorted(s, 90)).toBeCloseTo(3.7);
  });
  it("uses the nonzero magnitudes each sign mode shows", () => {
    const v = Float32Array.from([-4, -1, 0, 0, 2, 3]);
    expect(Array.from(shownMagnitudes(v, "signed"))).toEqual([1, 2, 3, 4]);
    expect(Array.from(shownMagnitudes(v, "absolute"))).toEqual([1, 2, 3, 4]);
    expect(Array.from(shownMagnitudes(v, "positive"))).toEqual([2, 3]);
    expect(Array.from(shownMagnitudes(v, "negative"))).toEqual([1, 4]);
    expect(computeVmax(shownMagnitudes(v, "signed"), 100)).toBe(4);
    expect(computeVmax(shownMagnitudes(v, "positive"), 50)).toBeCloseTo(2.5);
  });
  it("guards an all-zero map (and a one-sided mode with nothing to show) with vmax = 1", () => {
    expect(computeVmax(shownMagnitudes(new Float32Array(5), "signed"), 99.5)).toBe(1);
    expect(computeVmax(shownMagnitudes(Float32Array.from([-1, -2]), "positive"), 99.5)).toBe(1);
  });
});

describe("normalise and LUT index", () => {
  it("signed mode is diverging around the middle of the LUT", () => {
    expect(normalise(0, "signed", 2)).toBe(0.5);
    expect(normalise(2, "signed", 2)).toBe(1);
    expect(normalise(-2, "signed", 2)).toBe(0);
    expect(normalise(-9, "signed", 2)).toBe(0);
    expect(normalise(1, "signed", 2)).toBe(0.75);
  });
  it("one-sided modes map onto [0, 1]", () => {
    expect(normalise(-1, "positive", 2)).toBe(0);
    expect(normalise(1, "positive", 2)).toBe(0.5);
    expect(normalise(-1, "negative", 2)).toBe(0.5);
    expect(normalise(1, "negative", 2)).toBe(0);
    expect(normalise(-1, "absolute", 2)).toBe(0.5);
    expect(normalise(5, "absolute", 2)).toBe(1);
  });
  it("LUT index follows matplotlib: floor(t * 256), 1.0 -> 255", () => {
    expect(lutIndex(0)).toBe(0);
    expect(lutIndex(0.5)).toBe(128);
    expect(lutIndex(1)).toBe(255);
    expect(lutIndex(0.999)).toBe(255);
    expect(lutIndex(0.75)).toBe(192);
  });
});

describe("colorize", () => {
  const lut = rampLut();
  const px = (rgba, i) => Array.from(rgba.subarray(i * 4, i * 4 + 4));

  it("signed mode: colour from the diverging index, alpha = opacity x magnitude", () => {
    const rgba = colorize(Float32Array.from([-2, 0, 1, 2, 4]), lut, { sign: "signed", opacity: 0.6, vmax: 2 });
    const a = Math.round(0.6 * 255);
    expect(px(rgba, 0)).toEqual([0, 255, 7, a]);
    expect(px(rgba, 1)).toEqual([128, 127, 7, 0]); // zero attribution: image untouched
    expect(px(rgba, 2)).toEqual([192, 63, 7, Math.round(0.6 * 0.5 * 255)]);
    expect(px(rgba, 3)).toEqual([255, 0, 7, a]);
    expect(px(rgba, 4)).toEqual([255, 0, 7, a]); // clipped
  });
  it("positive mode: negatives at index 0 and transparent, alpha scaled by magnitude", () => {
    const rgba = colorize(Float32Array.from([-1, 0, 1, 2]), lut, { sign: "positive", opacity: 1, vmax: 2 });
    expect(px(rgba, 0)).toEqual([0, 255, 7, 0]);
    expect(px(rgba, 1)).toEqual([0, 255, 7, 0]);
    expect(px(rgba, 2)).toEqual([128, 127, 7, 128]);
    expect(px(rgba, 3)).toEqual([255, 0, 7, 255]);
  });
  it("negative and absolute modes", () => {
    const v = Float32Array.from([-2, -1, 1]);
    const neg = colorize(v, lut, { sign: "negative", opacity: 0.5, vmax: 2 });
    expect(px(neg, 0)).toEqual([255, 0, 7, 128]);
    expect(px(neg, 1)).toEqual([128, 127, 7, 64]);
    expect(px(neg, 2)).toEqual([0, 255, 7, 0]);
    const abs = colorize(v, lut, { sign: "absolute", opacity: 1, vmax: 2 });
    expect(px(abs, 0)).toEqual([255, 0, 7, 255]);
    expect(px(abs, 1)).toEqual([128, 127, 7, 128]);
    expect(px(abs, 2)).toEqual([128, 127, 7, 128]);
  });
  it("opacity 0 hides the map; the LUT's own alpha is respected; NaN is transparent", () => {
    expect(px(colorize(Float32Array.from([1]), lut, { opacity: 0, vmax: 1 }), 0)[3]).toBe(0);
    const half = rampLut();
    for (let i = 0; i < 256; i++) half[i * 4 + 3] = 128;
    expect(px(colorize(Float32Array.from([1]), half, { opacity: 1, vmax: 1 }), 0)[3]).toBe(128);
    expect(px(colorize(Float32Array.from([NaN]), lut, { opacity: 1, vmax: 1 }), 0)).toEqual([0, 0, 0, 0]);
  });
});

describe("LUT selection and colour bar", () => {
  it("pickLut finds the named LUT in the packed bytes", () => {
    const luts = new Uint8Array(2048);
    luts[1024] = 42;
    expect(pickLut(luts, ["a", "b"], "b")[0]).toBe(42);
    expect(pickLut(luts, ["a", "b"], "c")).toBe(null);
    expect(pickLut(luts.subarray(0, 1024), ["a", "b"], "b")).toBe(null);
  });
  it("colour bar strip is the opaque LUT and labels follow the sign mode", () => {
    const lut = rampLut();
    lut[3] = 0;
    const strip = colorbarPixels(lut);
    expect(Array.from(strip.subarray(0, 4))).toEqual([0, 255, 7, 255]);
    expect(Array.from(strip.subarray(1020, 1024))).toEqual([255, 0, 7, 255]);
    expect(colorbarLabels("signed", 0.5)).toEqual({ left: "-0.5", middle: "0", right: "0.5" });
    expect(colorbarLabels("positive", 2)).toMatchObject({ left: "0", right: "2" });
    expect(colorbarLabels("negative", 2)).toMatchObject({ left: "0", right: "-2" });
    expect(colorbarLabels("absolute", 2)).toMatchObject({ left: "|v| 0", right: "|v| 2" });
    expect(scaleEnds("signed", 3)).toEqual([-3, 3]);
  });
  it("formatNumber", () => {
    expect(formatNumber(0.123456)).toBe("0.123");
    expect(formatNumber(1234)).toBe("1230");
    expect(formatNumber(1.5e-5)).toBe("1.50e-5");
    expect(formatNumber(0)).toBe("0");
  });
});
