// Colour bar: an opaque strip of the LUT from left (index 0) to right (255),
// with the values at both ends and an optional caption.
import { formatNumber, scaleEnds } from "./colormap.js";

/** RGBA of the strip: the 256 LUT entries, fully opaque. */
export function colorbarPixels(lut) {
  const px = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    px[i * 4] = lut[i * 4];
    px[i * 4 + 1] = lut[i * 4 + 1];
    px[i * 4 + 2] = lut[i * 4 + 2];
    px[i * 4 + 3] = 255;
  }
  return px;
}

/** Texts at the left end, the middle and the right end of the bar. */
export function colorbarLabels(sign, vmax) {
  const [lo, hi] = scaleEnds(sign, vmax);
  const mid = sign === "signed" ? "0" : "";
  const prefix = sign === "absolute" ? "|v| " : "";
  return { left: prefix + formatNumber(lo), middle: mid, right: prefix + formatNumber(hi) };
}

/** Build the DOM of a colour bar; returns the parts the widget updates. */
export function createColorbar(doc) {
  const root = doc.createElement("div");
  root.className = "critpath-overlay-colorbar";
  const strip = doc.createElement("canvas");
  strip.className = "critpath-overlay-colorbar-strip";
  strip.width = 256;
  strip.height = 1;
  const ticks = doc.createElement("div");
  ticks.className = "critpath-overlay-colorbar-ticks";
  const left = doc.createElement("span");
  left.className = "critpath-overlay-colorbar-min";
  const middle = doc.createElement("span");
  middle.className = "critpath-overlay-colorbar-mid";
  const right = doc.createElement("span");
  right.className = "critpath-overlay-colorbar-max";
  ticks.append(left, middle, right);
  const caption = doc.createElement("div");
  caption.className = "critpath-overlay-colorbar-label";
  root.append(strip, ticks, caption);
  return { root, strip, left, middle, right, caption };
}

/** Repaint the strip and the labels. */
export function updateColorbar(parts, { lut, sign, vmax, label }) {
  const ctx = parts.strip.getContext("2d");
  if (ctx && lut) {
    const img = ctx.createImageData(256, 1);
    img.data.set(colorbarPixels(lut));
    ctx.putImageData(img, 0, 0);
  }
  const t = colorbarLabels(sign, vmax);
  parts.left.textContent = t.left;
  parts.middle.textContent = t.middle;
  parts.right.textContent = t.right;
  parts.caption.textContent = label || "";
  parts.caption.style.display = label ? "" : "none";
}
