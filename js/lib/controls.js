// The overlay's DOM parts that hold no state: its style sheet and its row of
// controls, each with a tooltip that says what it does (the widget wires them).
import { SIGN_MODES } from "./colormap.js";

export const CSS = `
.critpath-overlay { display: inline-flex; flex-direction: column; gap: 4px; max-width: 100%;
  font: 12px var(--jp-ui-font-family, system-ui, sans-serif);
  color: var(--jp-ui-font-color1, #222); }
.critpath-overlay-controls { display: flex; flex-wrap: wrap; gap: 4px 10px; align-items: center; }
.critpath-overlay-controls label { display: inline-flex; gap: 4px; align-items: center; }
.critpath-overlay-controls input[type=number] { width: 4.5em; }
.critpath-overlay-opacity, .critpath-overlay-dim { width: 64px; }
.critpath-overlay-canvas { display: block; cursor: crosshair; }
.critpath-overlay-colorbar-strip { display: block; width: 100%; height: 10px;
  border: 1px solid var(--jp-border-color1, #999); box-sizing: border-box; }
.critpath-overlay-colorbar-ticks { display: flex; justify-content: space-between;
  font-variant-numeric: tabular-nums; }
.critpath-overlay-colorbar-label { text-align: center; }
.critpath-overlay-readout { min-height: 1.4em; font-variant-numeric: tabular-nums;
  color: var(--jp-ui-font-color2, #555); }
.critpath-overlay-message { padding: 2px 4px; border-left: 3px solid var(--jp-warn-color1, #e08e00);
  background: var(--jp-layout-color2, #f6f6f6); white-space: pre-wrap; }
`;

/** An element of `tag` with a class name and properties. */
export function el_(doc, tag, className, props = {}) {
  const e = doc.createElement(tag);
  if (className) e.className = className;
  Object.assign(e, props);
  return e;
}

/** The controls row and its inputs (values are filled in by the widget). */
export function createControls(doc) {
  const controls = el_(doc, "div", "critpath-overlay-controls");
  const cmapSelect = el_(doc, "select", "critpath-overlay-colormap", {
    title: "colormap of the map (sequential, e.g. inferno, for magnitudes; diverging, e.g. RdBu_r, for signed)",
  });
  const opacityInput = el_(doc, "input", "critpath-overlay-opacity", {
    type: "range", min: "0", max: "1", step: "0.01", title: "opacity of the strongest pixels of the map over the photo",
  });
  const opacityText = el_(doc, "span", "critpath-overlay-opacity-value");
  const signSelect = el_(doc, "select", "critpath-overlay-sign", {
    title: "which part of the map: absolute = magnitude, signed = both signs on a diverging scale, " +
      "positive / negative = one sign only",
  });
  for (const s of SIGN_MODES) signSelect.append(el_(doc, "option", "", { value: s, textContent: s }));
  const clipInput = el_(doc, "input", "critpath-overlay-clip", {
    type: "number", min: "0.1", max: "100", step: "0.1",
    title: "percentile of |values| mapped to the end of the colour scale " +
      "(lower: more pixels saturate; the few strongest no longer wash out the rest)",
  });
  const smoothInput = el_(doc, "input", "critpath-overlay-smooth", {
    type: "number", min: "0", max: "0.25", step: "0.005",
    title: "display-only blur, sigma as a share of the map's side (0 = raw pixels); " +
      "the numbers and the hover readout stay raw",
  });
  const dimInput = el_(doc, "input", "critpath-overlay-dim", {
    type: "range", min: "0", max: "1", step: "0.05",
    title: "how much the photo is greyed and darkened so that the map stands out",
  });
  const mapOnlyInput = el_(doc, "input", "critpath-overlay-map-only", {
    type: "checkbox", title: "show the map alone, without the photo",
  });
  const lab = (text, ...kids) => {
    const l = el_(doc, "label", "");
    l.append(text, ...kids);
    return l;
  };
  controls.append(
    lab("map ", cmapSelect),
    lab("opacity ", opacityInput, opacityText),
    lab("sign ", signSelect),
    lab("clip % ", clipInput),
    lab("blur ", smoothInput),
    lab("photo dim ", dimInput),
    lab(mapOnlyInput, " map only"),
  );
  return {
    controls, cmapSelect, opacityInput, opacityText, signSelect, clipInput, smoothInput, dimInput, mapOnlyInput,
  };
}
