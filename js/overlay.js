// AttributionOverlay front end (anywidget ESM).
//
// Draws the background image (PNG bytes, muted by photo_dim) with the attribution
// map painted over it (or the map alone: map_only), a colour bar and a hover
// readout. Colormap, opacity, sign mode, percentile clipping, gamma and the
// photo's muting are applied here in the browser: a control change repaints at
// once, then the new value is sent to Python with model.set + save_changes.
// The display-only blur (smooth) is computed once, in Python: it sends the
// blurred map as `display` for `display_sign`; until that matches the current
// sign (or when smooth is 0) the raw values are painted. The hover readout
// always shows the raw values. Python-side changes of the same traits arrive as
// change:<trait> events and repaint too. A key of everything that affects the
// picture guards against repaints that would draw the same thing again.
//
// Test hooks: root class `critpath-overlay`, painted canvas class
// `critpath-overlay-canvas`, message area `.critpath-overlay-message`, and after
// each actual repaint el.dataset.paintCount (1, 2, ...) and el.dataset.paintKey
// (8 hex digits that change when the painted content changes).
//
// Scrubbing: while `preview_sparsity` (jslinked to the explorer's slider) differs from
// `values_sparsity` (the exact map's), the nearest level of the `stack` is painted
// (when it was made for the current sign and blur) and the label says "≈ sparsity";
// the exact map wins as soon as it is for the wanted sparsity. el.dataset.preview is
// the painted level's sparsity ("" for the exact map), dataset.stackLevels their count.

import {
  asBytes,
  colorize,
  computeVmax,
  decodeValues,
  formatNumber,
  grayLut,
  pickLut,
  shownMagnitudes,
} from "./lib/colormap.js";
import { cellAt, displaySize, paintLayers, putPixels, sizeCanvas } from "./lib/canvas.js";
import { createColorbar, updateColorbar } from "./lib/colorbar.js";
import { CSS, createControls, el_ } from "./lib/controls.js";
import { createStack } from "./lib/stack.js";


/** FNV-1a 32-bit hash as 8 hex digits: the short paintKey. */
export function shortHash(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** Default PNG decoder: createImageBitmap, else an <img> from an object URL. */
async function decodePng(bytes) {
  const blob = new Blob([bytes], { type: "image/png" });
  if (typeof createImageBitmap === "function") return createImageBitmap(blob);
  const url = URL.createObjectURL(blob);
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    return img;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/**
 * Build the widget inside `el`. `deps` lets tests replace the browser parts:
 * decodeImage(bytes) -> Promise<drawable with width/height>,
 * devicePixelRatio() -> number, containerWidth() -> number (0 = unknown).
 * Returns { cleanup, repaint, state } (state is for tests and debugging).
 */
export function createOverlay({ model, el }, deps = {}) {
  const doc = el.ownerDocument || document;
  const win = doc.defaultView || globalThis;
  const decodeImage = deps.decodeImage || decodePng;
  const getDpr = deps.devicePixelRatio || (() => win.devicePixelRatio || 1);
  const containerWidth = deps.containerWidth || (() => el.clientWidth || 0);

  // ---- DOM ----------------------------------------------------------------
  const root = el_(doc, "div", "critpath-overlay");
  const style = el_(doc, "style", "", { textContent: CSS });
  const {
    controls, cmapSelect, opacityInput, opacityText, signSelect, clipInput, smoothInput, dimInput, mapOnlyInput,
  } = createControls(doc);
  const canvas = el_(doc, "canvas", "critpath-overlay-canvas");
  const mapLayer = doc.createElement("canvas"); // h x w map pixels, never attached
  const colorbar = createColorbar(doc);
  const readout = el_(doc, "div", "critpath-overlay-readout");
  const messageEl = el_(doc, "div", "critpath-overlay-message");
  root.append(style, controls, canvas, colorbar.root, readout, messageEl);
  el.append(root);

  // ---- state ----------------------------------------------------------------
  const view = {};
  const data = { version: 0, src: null, shape: [0, 0], values: null, h: 0, w: 0, error: "", mags: {} };
  // the display map from Python (blurred shown part), valid for disp.sign
  const disp = { version: 0, src: null, values: null, sign: "", mags: {} };
  const image = { version: 0, drawable: null, token: 0, error: "" };
  const stack = createStack();
  let lutVersion = 0;
  let lastKey = null;
  let lastBarKey = null;
  let paintCount = 0;
  let lastPixels = null;
  let lastVmax = 1;
  let destroyed = false;

  function readTraits() {
    view.colormap = model.get("colormap") || "";
    view.colormaps = model.get("colormaps") || [];
    view.opacity = Number(model.get("opacity"));
    view.sign = model.get("sign") || "signed";
    view.clip = Number(model.get("clip_percentile"));
    view.label = model.get("label") || "";
    view.message = model.get("message") || "";
    view.displayWidth = Number(model.get("display_width")) || 320;
    view.smooth = Number(model.get("smooth")) || 0;
    view.photoDim = Number(model.get("photo_dim")) || 0;
    const g = Number(model.get("gamma"));
    view.gamma = g > 0 ? g : 1;
    view.mapOnly = Boolean(model.get("map_only"));
    const num = (k) => (model.get(k) === undefined ? -1 : Number(model.get(k)));
    view.preview = num("preview_sparsity");
    view.exact = num("values_sparsity");
    stack.read(model);
    el.dataset.stackLevels = String(stack.levels.length);
  }

  /** Decode the display map when it or the map's shape changed. */
  function decodeDisplay() {
    const src = model.get("display");
    const sign = model.get("display_sign") || "";
    if (disp.version > 0 && src === disp.src && sign === disp.sign && disp.dataVersion === data.version) {
      return;
    }
    disp.src = src;
    disp.sign = sign;
    disp.dataVersion = data.version;
    disp.version++;
    disp.mags = {};
    disp.values = null;
    const bytes = asBytes(src);
    if (bytes.byteLength > 0 && data.values && bytes.byteLength === data.values.length * 4) {
      try {
        disp.values = decodeValues(bytes, [data.h, data.w]);
      } catch {
        disp.values = null;
      }
    }
  }

  /** What is coloured: the display map when it fits the current sign and blur, else raw. */
  function paintSource() {
    const p = stack.pick(view.preview, view.exact, data.h, data.w, view.sign, view.smooth);
    if (p && data.values) return p;
    if (view.smooth > 0 && disp.values && disp.sign === view.sign) {
      return { values: disp.values, mags: disp.mags, tag: `d${disp.version}` };
    }
    return { values: data.values, mags: data.mags, tag: `r${data.version}` };
  }

  /** Decode the map once per change of (values, shape): the two usually arrive together. */
  function decodeData() {
    const src = model.get("values");
    const shape = model.get("shape") || [0, 0];
    if (data.version > 0 && src === data.src && shape[0] === data.shape[0] && shape[1] === data.shape[1]) {
      return false;
    }
    data.src = src;
    data.shape = [shape[0], shape[1]];
    data.version++;
    data.mags = {};
    data.error = "";
    const bytes = asBytes(src);
    try {
      if (bytes.byteLength === 0) {
        data.values = null;
        data.h = data.w = 0;
      } else {
        data.values = decodeValues(bytes, shape);
        [data.h, data.w] = shape;
      }
    } catch (err) {
      data.values = null;
      data.h = data.w = 0;
      data.error = String(err.message || err);
    }
    return true;
  }

  function vmaxFor(src, sign, clip) {
    if (!src.values) return 1;
    if (!src.mags[sign]) src.mags[sign] = shownMagnitudes(src.values, sign);
    return computeVmax(src.mags[sign], clip);
  }

  function currentLut() {
    return pickLut(model.get("luts"), view.colormaps, view.colormap);
  }

  function syncControls() {
    const names = view.colormaps;
    const have = Array.from(cmapSelect.options).map((o) => o.value);
    if (have.join("\n") !== names.join("\n")) {
      cmapSelect.replaceChildren(...names.map((n) => el_(doc, "option", "", { value: n, textContent: n })));
    }
    if (cmapSelect.value !== view.colormap) cmapSelect.value = view.colormap;
    opacityInput.value = String(view.opacity);
    opacityText.textContent = view.opacity.toFixed(2);
    signSelect.value = view.sign;
    if (doc.activeElement !== clipInput) clipInput.value = String(view.clip);
    if (doc.activeElement !== smoothInput) smoothInput.value = String(view.smooth);
    dimInput.value = String(view.photoDim);
    mapOnlyInput.checked = view.mapOnly;
  }

  function showMessage() {
    const local = [data.error, image.error].filter(Boolean).join("\n");
    const lut = currentLut();
    const lutNote = view.colormap && !lut && view.colormaps.length ? `no colour table for ${view.colormap}` : "";
    const text = [view.message, local, lutNote].filter(Boolean).join("\n");
    messageEl.textContent = text;
    messageEl.style.display = text ? "" : "none";
  }

  /** Repaint if anything that affects the picture changed; returns true if it painted. */
  function repaint() {
    if (destroyed) return false;
    const dpr = Number(getDpr()) || 1;
    const aspect = image.drawable
      ? image.drawable.height / image.drawable.width
      : data.h && data.w
        ? data.h / data.w
        : 1;
    const { cssWidth, cssHeight } = displaySize(view.displayWidth, aspect, containerWidth());
    const lut = currentLut() || grayLut();
    const src = paintSource();
    const vmax = vmaxFor(src, view.sign, view.clip);
    lastVmax = vmax;

    const label = src.sparsity === undefined ? view.label : `≈ sparsity ${src.sparsity.toFixed(2)} (preview) · ${view.label}`;
    const barKey = [view.colormap, lutVersion, view.sign, vmax, label].join("|");
    if (barKey !== lastBarKey) {
      updateColorbar(colorbar, { lut, sign: view.sign, vmax, label });
      lastBarKey = barKey;
    }
    colorbar.root.style.width = `${cssWidth}px`;

    const key = [
      image.version, data.version, src.tag, view.colormap, lutVersion, view.opacity,
      view.sign, view.clip, view.gamma, view.photoDim, view.mapOnly, cssWidth, cssHeight, dpr,
    ].join("|");
    if (key === lastKey) return false;

    const { width, height } = sizeCanvas(canvas, cssWidth, cssHeight, dpr);
    let layer = null;
    if (src.values) {
      const opts = { sign: view.sign, opacity: view.opacity, vmax, fade: !view.mapOnly, gamma: view.gamma };
      lastPixels = colorize(src.values, lut, opts);
      if (putPixels(mapLayer, lastPixels, data.w, data.h)) layer = mapLayer;
    } else {
      lastPixels = null;
    }
    const ctx = canvas.getContext("2d");
    const photo = view.mapOnly ? null : image.drawable;
    if (ctx) paintLayers(ctx, { width, height, image: photo, mapLayer: layer, dim: view.photoDim });
    lastKey = key;
    paintCount++;
    el.dataset.paintCount = String(paintCount);
    el.dataset.paintKey = shortHash(key);
    el.dataset.preview = src.sparsity === undefined ? "" : String(src.sparsity);
    return true;
  }

  function loadImage() {
    const token = ++image.token;
    const bytes = asBytes(model.get("image"));
    if (bytes.byteLength === 0) {
      const had = image.drawable !== null || image.error !== "";
      if (image.drawable && typeof image.drawable.close === "function") image.drawable.close();
      image.drawable = null;
      image.error = "";
      if (!had) return Promise.resolve();
      image.version++;
      showMessage();
      repaint();
      return Promise.resolve();
    }
    // copy: the DataView may be reused by the kernel connection
    return Promise.resolve()
      .then(() => decodeImage(bytes.slice()))
      .then((drawable) => {
        if (destroyed || token !== image.token) {
          if (drawable && typeof drawable.close === "function") drawable.close();
          return;
        }
        const old = image.drawable;
        image.drawable = drawable;
        image.error = "";
        image.version++;
        if (old && old !== drawable && typeof old.close === "function") old.close();
        showMessage();
        repaint();
      })
      .catch((err) => {
        if (destroyed || token !== image.token) return;
        image.error = `could not decode the image: ${err && err.message ? err.message : err}`;
        showMessage();
      });
  }

  // ---- hover readout ---------------------------------------------------------
  function onMove(ev) {
    if (!data.values) return;
    const rect = canvas.getBoundingClientRect();
    const cssW = rect.width || parseFloat(canvas.style.width) || 0;
    const cssH = rect.height || parseFloat(canvas.style.height) || 0;
    const cell = cellAt(ev.clientX - rect.left, ev.clientY - rect.top, cssW, cssH, data.h, data.w);
    if (!cell) {
      readout.textContent = "";
      return;
    }
    const v = data.values[cell.row * data.w + cell.col];
    readout.textContent = `row ${cell.row}, col ${cell.col}: ${formatNumber(v)}`;
    readout.dataset.row = String(cell.row);
    readout.dataset.col = String(cell.col);
    readout.dataset.value = String(v);
  }
  function onLeave() {
    readout.textContent = "";
    delete readout.dataset.row;
    delete readout.dataset.col;
    delete readout.dataset.value;
  }

  // ---- controls: repaint locally first, then tell Python ----------------------
  function localChange(trait, key, value) {
    view[key] = value;
    syncControls();
    repaint();
    model.set(trait, value);
    model.save_changes();
  }
  const onCmap = () => localChange("colormap", "colormap", cmapSelect.value);
  const onOpacity = () => {
    const v = Math.min(1, Math.max(0, Number(opacityInput.value)));
    if (Number.isFinite(v)) localChange("opacity", "opacity", v);
  };
  const onSign = () => localChange("sign", "sign", signSelect.value);
  const onClip = () => {
    const v = Number(clipInput.value);
    if (Number.isFinite(v) && v > 0 && v <= 100) localChange("clip_percentile", "clip", v);
    else clipInput.value = String(view.clip);
  };
  const onSmooth = () => {
    const v = Number(smoothInput.value);
    if (Number.isFinite(v) && v >= 0 && v <= 0.25) localChange("smooth", "smooth", v);
    else smoothInput.value = String(view.smooth);
  };
  const onDim = () => {
    const v = Math.min(1, Math.max(0, Number(dimInput.value)));
    if (Number.isFinite(v)) localChange("photo_dim", "photoDim", v);
  };
  const onMapOnly = () => localChange("map_only", "mapOnly", mapOnlyInput.checked);
  const domListeners = [
    [canvas, "mousemove", onMove],
    [canvas, "mouseleave", onLeave],
    [cmapSelect, "change", onCmap],
    [opacityInput, "input", onOpacity],
    [signSelect, "change", onSign],
    [clipInput, "change", onClip],
    [smoothInput, "change", onSmooth],
    [dimInput, "input", onDim],
    [mapOnlyInput, "change", onMapOnly],
  ];
  for (const [t, ev, fn] of domListeners) t.addEventListener(ev, fn);

  // ---- model events -----------------------------------------------------------
  const onTraits = () => {
    readTraits();
    syncControls();
    showMessage();
    repaint();
  };
  const onData = () => {
    if (decodeData()) onLeave();
    decodeDisplay();
    onTraits();
  };
  const onDisplay = () => {
    decodeDisplay();
    onTraits();
  };
  const onLuts = () => {
    lutVersion++;
    onTraits();
  };
  const modelListeners = [
    ["change:values", onData],
    ["change:shape", onData],
    ["change:image", loadImage],
    ["change:luts", onLuts],
    ["change:colormaps", onLuts],
    ["change:colormap", onTraits],
    ["change:opacity", onTraits],
    ["change:sign", onTraits],
    ["change:clip_percentile", onTraits],
    ["change:label", onTraits],
    ["change:message", onTraits],
    ["change:display_width", onTraits],
    ["change:display", onDisplay],
    ["change:display_sign", onDisplay],
    ["change:smooth", onTraits],
    ["change:photo_dim", onTraits],
    ["change:gamma", onTraits],
    ["change:map_only", onTraits],
    ...["stack", "stack_levels", "stack_ranges", "stack_sign", "stack_smooth"].map((t) => [`change:${t}`, onTraits]),
    ["change:preview_sparsity", onTraits],
    ["change:values_sparsity", onTraits],
  ];
  for (const [ev, fn] of modelListeners) model.on(ev, fn);

  // ---- display changes: devicePixelRatio and container width --------------------
  let dprQuery = null;
  const onDpr = () => {
    watchDpr();
    repaint();
  };
  function watchDpr() {
    if (dprQuery) dprQuery.removeEventListener("change", onDpr);
    dprQuery = null;
    if (typeof win.matchMedia !== "function") return;
    dprQuery = win.matchMedia(`(resolution: ${Number(getDpr()) || 1}dppx)`);
    if (dprQuery && dprQuery.addEventListener) dprQuery.addEventListener("change", onDpr);
    else dprQuery = null;
  }
  watchDpr();
  let resizeObserver = null;
  if (typeof win.ResizeObserver === "function") {
    resizeObserver = new win.ResizeObserver(() => repaint());
    resizeObserver.observe(el);
  }

  // ---- first paint --------------------------------------------------------------
  readTraits();
  decodeData();
  decodeDisplay();
  syncControls();
  showMessage();
  repaint();
  const ready = loadImage();

  function cleanup() {
    destroyed = true;
    for (const [ev, fn] of modelListeners) model.off(ev, fn);
    for (const [t, ev, fn] of domListeners) t.removeEventListener(ev, fn);
    if (dprQuery) dprQuery.removeEventListener("change", onDpr);
    if (resizeObserver) resizeObserver.disconnect();
    if (image.drawable && typeof image.drawable.close === "function") image.drawable.close();
    image.drawable = null;
    root.remove();
  }

  return {
    cleanup,
    repaint,
    ready,
    state: {
      view,
      data,
      disp,
      stack,
      get paintCount() { return paintCount; },
      get pixels() { return lastPixels; },
      get vmax() { return lastVmax; },
      get mapLayer() { return mapLayer; },
    },
  };
}

export default {
  render({ model, el }) {
    const { cleanup } = createOverlay({ model, el });
    return cleanup;
  },
};
