import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget, { createOverlay, shortHash } from "../overlay.js";
import { f32View, installFakeCanvas, makeModel, rampLut } from "./helpers.js";

function packedLuts(n) {
  const out = new Uint8Array(n * 1024);
  for (let k = 0; k < n; k++) {
    const l = rampLut();
    for (let i = 0; i < 256; i++) l[i * 4 + 2] = k; // blue channel tells the LUTs apart
    out.set(l, k * 1024);
  }
  return new DataView(out.buffer);
}

function baseTraits(over = {}) {
  return {
    image: new DataView(new ArrayBuffer(0)),
    values: f32View([-2, -1, 0, 1, 2, 4]),
    shape: [2, 3],
    colormap: "a",
    colormaps: ["a", "b"],
    luts: packedLuts(2),
    opacity: 0.6,
    sign: "signed",
    clip_percentile: 100,
    label: "attribution",
    message: "",
    display_width: 300,
    ...over,
  };
}

const fakeImage = { width: 30, height: 20 };
const deps = {
  decodeImage: async () => fakeImage,
  devicePixelRatio: () => 2,
  containerWidth: () => 0,
};

let canvasFake;
let el;
beforeEach(() => {
  canvasFake = installFakeCanvas();
  el = document.createElement("div");
  document.body.append(el);
});
afterEach(() => {
  canvasFake.spy.mockRestore();
  el.remove();
});

const px = (rgba, i) => Array.from(rgba.subarray(i * 4, i * 4 + 4));

describe("AttributionOverlay front end", () => {
  it("builds the DOM with the test hooks and paints once", async () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    await w.ready;
    expect(el.querySelector(".critpath-overlay")).not.toBe(null);
    const canvas = el.querySelector("canvas.critpath-overlay-canvas");
    expect(canvas).not.toBe(null);
    expect(el.dataset.paintCount).toBe("1"); // no image: the initial paint only
    expect(el.dataset.paintKey).toMatch(/^[0-9a-f]{8}$/);
    // 300 CSS px wide, aspect of the 2x3 map, backing store x2 for devicePixelRatio 2
    expect(canvas.style.width).toBe("300px");
    expect(canvas.style.height).toBe("200px");
    expect(canvas.width).toBe(600);
    expect(canvas.height).toBe(400);
    const opts = Array.from(el.querySelectorAll(".critpath-overlay-colormap option")).map((o) => o.value);
    expect(opts).toEqual(["a", "b"]);
    expect(el.querySelector(".critpath-overlay-colorbar-min").textContent).toBe("-4");
    expect(el.querySelector(".critpath-overlay-colorbar-max").textContent).toBe("4");
    expect(el.querySelector(".critpath-overlay-colorbar-label").textContent).toBe("attribution");
    w.cleanup();
  });

  it("paints the image, then the map upscaled with nearest-neighbour", async () => {
    const model = makeModel(baseTraits({ image: f32View([1]) }));
    const w = createOverlay({ model, el }, deps);
    await w.ready;
    expect(el.dataset.paintCount).toBe("2"); // map alone, then with the decoded image
    const canvas = el.querySelector(".critpath-overlay-canvas");
    // aspect now from the 30x20 image
    expect(canvas.style.height).toBe("200px");
    const ctx = canvasFake.contextOf(canvas);
    const draws = ctx.calls.filter((c) => c[0] === "drawImage").slice(-2);
    expect(draws[0][1]).toBe(fakeImage);
    expect(draws[0].at(-1)).toEqual({ smoothing: true });
    expect(draws[1][1]).toBe(w.state.mapLayer);
    expect(draws[1].slice(2, 6)).toEqual([0, 0, 600, 400]);
    expect(draws[1].at(-1)).toEqual({ smoothing: false });
    w.cleanup();
  });

  it("builds the right RGBA for the map (signed, LUT 'a', opacity 0.6, vmax = max|v|)", async () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    const layer = w.state.mapLayer;
    expect([layer.width, layer.height]).toEqual([3, 2]);
    const rgba = layer._pixels.data; // what went into putImageData
    // alpha = opacity x |v| / vmax: zero attribution leaves the image untouched
    expect(px(rgba, 0)).toEqual([64, 191, 0, Math.round(0.6 * 0.5 * 255)]); // -2 -> 0.25 -> 64
    expect(px(rgba, 2)).toEqual([128, 127, 0, 0]); // 0 -> 128, transparent
    expect(px(rgba, 5)).toEqual([255, 0, 0, Math.round(0.6 * 255)]); // 4 -> 1
    w.cleanup();
  });

  it("hover shows the row, column and value of the pixel", () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    const canvas = el.querySelector(".critpath-overlay-canvas");
    canvas.getBoundingClientRect = () => ({ left: 10, top: 20, width: 300, height: 200 });
    canvas.dispatchEvent(new MouseEvent("mousemove", { clientX: 10 + 250, clientY: 20 + 150 }));
    const readout = el.querySelector(".critpath-overlay-readout");
    expect(readout.textContent).toBe("row 1, col 2: 4");
    canvas.dispatchEvent(new MouseEvent("mousemove", { clientX: 10 + 120, clientY: 20 + 10 }));
    expect(readout.textContent).toBe("row 0, col 1: -1");
    expect(readout.dataset.value).toBe("-1");
    canvas.dispatchEvent(new MouseEvent("mouseleave"));
    expect(readout.textContent).toBe("");
    w.cleanup();
  });

  it("skips a repaint when nothing changed and repaints when opacity changes", () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    expect(el.dataset.paintCount).toBe("1");
    const key1 = el.dataset.paintKey;
    expect(w.repaint()).toBe(false);
    model.set("label", "something else"); // caption only: no canvas repaint
    expect(el.dataset.paintCount).toBe("1");
    expect(el.querySelector(".critpath-overlay-colorbar-label").textContent).toBe("something else");
    model.set("opacity", 0.3); // a Python-side change
    expect(el.dataset.paintCount).toBe("2");
    expect(el.dataset.paintKey).not.toBe(key1);
    expect(w.state.pixels[3]).toBe(Math.round(0.3 * 0.5 * 255)); // value -2 of vmax 4
    expect(el.querySelector(".critpath-overlay-opacity").value).toBe("0.3");
    expect(w.repaint()).toBe(false);
    expect(el.dataset.paintCount).toBe("2");
    w.cleanup();
  });

  it("control changes repaint locally at once, then sync to the model", () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    const slider = el.querySelector(".critpath-overlay-opacity");
    slider.value = "0.2";
    slider.dispatchEvent(new Event("input"));
    expect(model.get("opacity")).toBeCloseTo(0.2);
    expect(model.saves).toBe(1);
    expect(el.dataset.paintCount).toBe("2"); // the model echo did not paint again
    expect(w.state.pixels[3]).toBe(Math.round(0.2 * 0.5 * 255));

    const sign = el.querySelector(".critpath-overlay-sign");
    sign.value = "positive";
    sign.dispatchEvent(new Event("change"));
    expect(model.get("sign")).toBe("positive");
    expect(el.dataset.paintCount).toBe("3");
    // positive mode: vmax = max positive = 4; value 2 -> t 0.5 -> index 128, alpha 0.2*0.5
    expect(px(w.state.pixels, 4)).toEqual([128, 127, 0, Math.round(0.2 * 0.5 * 255)]);
    expect(px(w.state.pixels, 0)[3]).toBe(0); // negatives hidden

    const cmap = el.querySelector(".critpath-overlay-colormap");
    cmap.value = "b";
    cmap.dispatchEvent(new Event("change"));
    expect(model.get("colormap")).toBe("b");
    expect(px(w.state.pixels, 5)).toEqual([255, 0, 1, Math.round(0.2 * 255)]);

    const clip = el.querySelector(".critpath-overlay-clip");
    clip.value = "50";
    clip.dispatchEvent(new Event("change"));
    expect(model.get("clip_percentile")).toBe(50);
    expect(w.state.vmax).toBeCloseTo(2); // sign is positive: median of [1, 2, 4]
    expect(model.saves).toBe(4);
    w.cleanup();
  });

  it("an invalid clip percentile typed in is reverted and not sent", () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    const clip = el.querySelector(".critpath-overlay-clip");
    clip.value = "0";
    clip.dispatchEvent(new Event("change"));
    expect(model.get("clip_percentile")).toBe(100);
    expect(clip.value).toBe("100");
    expect(model.saves).toBe(0);
    w.cleanup();
  });

  it("new values and shape from Python decode once and repaint once", () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    model.setFromKernel({ values: f32View([1, 2, 3, 4]), shape: [1, 4] });
    // two change events, but the second finds the same key
    expect(el.dataset.paintCount).toBe("2");
    expect([w.state.mapLayer.width, w.state.mapLayer.height]).toEqual([4, 1]);
    expect(w.state.vmax).toBe(4);
    w.cleanup();
  });

  it("shows the message trait and local errors in the message area", () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    const msg = el.querySelector(".critpath-overlay-message");
    expect(msg.style.display).toBe("none");
    model.set("message", "computing...");
    expect(msg.textContent).toBe("computing...");
    expect(msg.style.display).toBe("");
    model.set("message", "");
    expect(msg.style.display).toBe("none");
    model.setFromKernel({ values: f32View([1, 2, 3]) }); // does not fit shape [2, 3]
    expect(msg.textContent).toMatch(/12 bytes/);
    w.cleanup();
  });

  it("colormaps appended from Python show up in the picker", () => {
    const model = makeModel(baseTraits());
    const w = createOverlay({ model, el }, deps);
    model.setFromKernel({ colormaps: ["a", "b", "c"], luts: packedLuts(3), colormap: "c" });
    const opts = Array.from(el.querySelectorAll(".critpath-overlay-colormap option")).map((o) => o.value);
    expect(opts).toEqual(["a", "b", "c"]);
    expect(el.querySelector(".critpath-overlay-colormap").value).toBe("c");
    expect(w.state.pixels[2]).toBe(2);
    w.cleanup();
  });

  it("render() returns a cleanup that removes every listener and the DOM", async () => {
    const model = makeModel(baseTraits({ image: f32View([1]) }));
    const before = model.listenerCount();
    const cleanup = widget.render({ model, el });
    expect(model.listenerCount()).toBeGreaterThan(before);
    expect(typeof cleanup).toBe("function");
    cleanup();
    expect(model.listenerCount()).toBe(before);
    expect(el.querySelector(".critpath-overlay")).toBe(null);
    const count = el.dataset.paintCount;
    model.set("opacity", 0.1);
    expect(el.dataset.paintCount).toBe(count);
  });

  it("a late image decode after cleanup does not paint", async () => {
    let resolve;
    const slow = { ...deps, decodeImage: () => new Promise((r) => (resolve = r)) };
    const model = makeModel(baseTraits({ image: f32View([1]) }));
    const w = createOverlay({ model, el }, slow);
    await Promise.resolve();
    w.cleanup();
    resolve(fakeImage);
    await w.ready;
    expect(el.dataset.paintCount).toBe("1");
  });

  it("shortHash is short and stable", () => {
    expect(shortHash("abc")).toBe(shortHash("abc"));
    expect(shortHash("abc")).not.toBe(shortHash("abd"));
    expect(shortHash("x")).toHaveLength(8);
  });
});
