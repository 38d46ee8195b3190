// The readable style in the browser: the display map from Python is what gets
// coloured (the readout stays raw), gamma, the map alone, the muted photo.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createOverlay } from "../overlay.js";
import { colorize } from "../lib/colormap.js";
import { dimPhoto } from "../lib/canvas.js";
import { f32View, installFakeCanvas, makeModel, rampLut } from "./helpers.js";

const RAW = [-2, -1, 0, 1, 2, 4];
const BLUR = [1.5, 1.5, 1.0, 2.0, 2.5, 3.0]; // a stand-in for Python's blurred |v|

function traits(over = {}) {
  return {
    image: new DataView(new ArrayBuffer(0)),
    values: f32View(RAW),
    shape: [2, 3],
    colormap: "a",
    colormaps: ["a"],
    luts: new DataView(rampLut().buffer),
    opacity: 1,
    sign: "absolute",
    clip_percentile: 100,
    label: "",
    message: "",
    display_width: 300,
    smooth: 0.01,
    photo_dim: 0.6,
    gamma: 2,
    map_only: false,
    display: f32View(BLUR),
    display_sign: "absolute",
    ...over,
  };
}

const deps = { decodeImage: async () => ({ width: 30, height: 20 }), devicePixelRatio: () => 1, containerWidth: () => 0 };
let fake;
let el;
beforeEach(() => {
  fake = installFakeCanvas();
  el = document.createElement("div");
  document.body.append(el);
});
afterEach(() => {
  fake.spy.mockRestore();
  el.remove();
});

const alphaOf = (rgba) => Array.from({ length: rgba.length / 4 }, (_, i) => rgba[i * 4 + 3]);

describe("readable rendering", () => {
  it("colorize: alpha follows magnitude ** gamma, and is the LUT's without fade", () => {
    const lut = rampLut();
    const v = new Float32Array([0, 1, 2, 4]);
    const a2 = alphaOf(colorize(v, lut, { sign: "absolute", opacity: 1, vmax: 4, gamma: 2 }));
    expect(a2).toEqual([0, 1, 2, 4].map((x) => Math.round((x / 4) ** 2 * 255)));
    const a1 = alphaOf(colorize(v, lut, { sign: "absolute", opacity: 1, vmax: 4 }));
    expect(a1).toEqual([0, 1, 2, 4].map((x) => Math.round((x / 4) * 255)));
    const opaque = alphaOf(colorize(v, lut, { sign: "absolute", opacity: 0.3, vmax: 4, fade: false }));
    expect(opaque).toEqual([255, 255, 255, 255]);
  });

  it("paints the display map for its sign, and the raw map otherwise", async () => {
    const model = makeModel(traits());
    const w = createOverlay({ model, el }, deps);
    await w.ready;
    const lut = rampLut();
    const want = colorize(new Float32Array(BLUR), lut, { sign: "absolute", opacity: 1, vmax: 3, gamma: 2 });
    expect(Array.from(w.state.pixels)).toEqual(Array.from(want));
    expect(w.state.vmax).toBe(3); // the colour bar's end is the displayed map's
    // the sign changes before Python sent the new display map: the raw map is painted
    model.set("sign", "positive");
    const raw = colorize(new Float32Array(RAW), lut, { sign: "positive", opacity: 1, vmax: 4, gamma: 2 });
    expect(Array.from(w.state.pixels)).toEqual(Array.from(raw));
    model.setFromKernel({ display_sign: "positive", display: f32View([0, 0, 0, 1, 2, 4]) });
    expect(w.state.vmax).toBe(4);
    // smooth 0: the raw map, whatever display holds
    model.set("sign", "absolute");
    model.setFromKernel({ smooth: 0, display_sign: "absolute", display: f32View(BLUR) });
    expect(w.state.vmax).toBe(4);
    w.cleanup();
  });

  it("keeps the hover readout raw while painting the blurred map", async () => {
    const model = makeModel(traits());
    const w = createOverlay({ model, el }, deps);
    await w.ready;
    const canvas = el.querySelector(".critpath-overlay-canvas");
    canvas.getBoundingClientRect = () => ({ left: 0, top: 0, width: 300, height: 200 });
    canvas.dispatchEvent(new MouseEvent("mousemove", { clientX: 250, clientY: 150 }));
    const readout = el.querySelector(".critpath-overlay-readout");
    expect(Number(readout.dataset.value)).toBe(4); // raw (row 1, col 2), not 3.0
    w.cleanup();
  });

  it("mutes the photo, and the map alone leaves it out and is opaque", async () => {
    const model = makeModel(traits({ image: f32View([1]) }));
    const w = createOverlay({ model, el }, deps);
    await w.ready;
    const canvas = el.querySelector(".critpath-overlay-canvas");
    const calls = fake.contextOf(canvas).calls;
    const fills = calls.filter((c) => c[0] === "fillRect").map((c) => c[5]);
    expect(fills.slice(-2)).toEqual([
      { op: "saturation", alpha: 0.6, fill: "#808080" },
      { op: "source-over", alpha: 0.3, fill: "#000000" },
    ]);
    const images = () => calls.filter((c) => c[0] === "drawImage").length;
    const before = images();
    el.querySelector(".critpath-overlay-map-only").click();
    expect(model.get("map_only")).toBe(true);
    expect(images() - before).toBe(1); // the map layer only, no photo
    expect(alphaOf(w.state.pixels).every((a) => a === 255)).toBe(true);
    w.cleanup();
  });

  it("controls explain themselves and send blur and dimming to Python", async () => {
    const model = makeModel(traits());
    const w = createOverlay({ model, el }, deps);
    for (const cls of ["smooth", "dim", "map-only", "clip", "sign", "opacity", "colormap"]) {
      expect(el.querySelector(`.critpath-overlay-${cls}`).title.length).toBeGreaterThan(5);
    }
    const smooth = el.querySelector(".critpath-overlay-smooth");
    smooth.value = "0.02";
    smooth.dispatchEvent(new Event("change"));
    expect(model.get("smooth")).toBe(0.02);
    smooth.value = "3";
    smooth.dispatchEvent(new Event("change"));
    expect(model.get("smooth")).toBe(0.02); // out of range: refused
    const dim = el.querySelector(".critpath-overlay-dim");
    dim.value = "0.25";
    dim.dispatchEvent(new Event("input"));
    expect(model.get("photo_dim")).toBe(0.25);
    w.cleanup();
  });

  it("dimPhoto does nothing at 0", () => {
    const calls = [];
    dimPhoto({ fillRect: () => calls.push(1), save() {}, restore() {} }, 10, 10, 0);
    expect(calls.length).toBe(0);
  });
});
