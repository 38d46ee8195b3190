// Canvas sizing and painting. Kept apart from the widget so that the geometry
// (CSS size vs backing store, pointer -> map cell) can be tested without a DOM.

/**
 * CSS size of the picture: `displayWidth` wide (or less when the container is
 * narrower), height from the aspect ratio of the background image, or of the
 * map when there is no image.
 */
export function displaySize(displayWidth, aspect, containerWidth) {
  let w = Math.max(1, Math.round(displayWidth || 1));
  if (containerWidth > 0 && containerWidth < w) w = Math.floor(containerWidth);
  const h = Math.max(1, Math.round(w * (aspect > 0 && Number.isFinite(aspect) ? aspect : 1)));
  return { cssWidth: w, cssHeight: h };
}

/**
 * Give `canvas` a backing store of css * devicePixelRatio device pixels and a
 * CSS size of css pixels, so that it stays crisp on high-DPI screens.
 * Returns the backing-store size.
 */
export function sizeCanvas(canvas, cssWidth, cssHeight, dpr) {
  const ratio = dpr > 0 && Number.isFinite(dpr) ? dpr : 1;
  const width = Math.max(1, Math.round(cssWidth * ratio));
  const height = Math.max(1, Math.round(cssHeight * ratio));
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  return { width, height };
}

/**
 * Map cell (row, col) under a pointer at (x, y) CSS pixels from the canvas's
 * top-left corner, for a picture of cssWidth x cssHeight showing an h x w map;
 * null when outside.
 */
export function cellAt(x, y, cssWidth, cssHeight, h, w) {
  if (!(cssWidth > 0 && cssHeight > 0 && h > 0 && w > 0)) return null;
  if (x < 0 || y < 0 || x >= cssWidth || y >= cssHeight) return null;
  const col = Math.min(w - 1, Math.floor((x / cssWidth) * w));
  const row = Math.min(h - 1, Math.floor((y / cssHeight) * h));
  return { row, col };
}

/**
 * Write RGBA pixels into a (w x h) canvas, the map layer before scaling.
 * Uses ctx.createImageData so that no global ImageData constructor is needed.
 */
export function putPixels(canvas, rgba, w, h) {
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const ctx = canvas.getContext("2d");
  if (!ctx) return null;
  const img = ctx.createImageData(w, h);
  img.data.set(rgba);
  ctx.putImageData(img, 0, 0);
  return img;
}

/**
 * Mute the photo already on the canvas by `dim` in [0, 1]: a grey "saturation"
 * blend at alpha dim (mixes each pixel with its luminance 0.3R + 0.59G + 0.11B by
 * dim), then black at alpha dim / 2 (darkens by dim / 2). Python's
 * colormaps.backdrop computes the same pixels.
 */
export function dimPhoto(ctx, width, height, dim) {
  const d = Math.min(1, Math.max(0, Number(dim) || 0));
  if (d === 0 || typeof ctx.fillRect !== "function") return;
  ctx.save();
  ctx.globalCompositeOperation = "saturation";
  ctx.globalAlpha = d;
  ctx.fillStyle = "#808080";
  ctx.fillRect(0, 0, width, height);
  ctx.globalCompositeOperation = "source-over";
  ctx.globalAlpha = d / 2;
  ctx.fillStyle = "#000000";
  ctx.fillRect(0, 0, width, height);
  ctx.restore();
}

/**
 * Paint the background image (smoothed, muted by `dim`) and then the map layer
 * upscaled with nearest-neighbour (imageSmoothingEnabled = false), both filling
 * the canvas. Without an image (or for the map alone) only the layer is painted.
 */
export function paintLayers(ctx, { width, height, image, mapLayer, dim = 0 }) {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, width, height);
  if (image) {
    ctx.imageSmoothingEnabled = true;
    if ("imageSmoothingQuality" in ctx) ctx.imageSmoothingQuality = "high";
    ctx.drawImage(image, 0, 0, width, height);
    dimPhoto(ctx, width, height, dim);
  }
  if (mapLayer) {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(mapLayer, 0, 0, width, height);
  }
}
