import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createOverlay } from "../overlay.js";
import { decodeLevel, nearestLevel } from "../lib/stack.js";
import { f32View, installFakeCanvas, makeModel, rampLut } from "./helpers.js";

// a 2 x 3 map; stack of two levels: level 0 = ramp, level 1 = zeros but one pixel
const stackBytes = new Uint8Array([0, 51, 102, 153, 204, 255, 7, 7, 7, 7, 7, 255]);
const stackTraits = {
  stack: new DataView(stackBytes.buffer),
  stack_levels: [0.5, 0.9],
  stack_ranges: [0.5, 0, 0.25, 7], // level 0: q * 0.5; level 1: (q - 7) * 0.25
  stack_sign: "signed",
  stack_smooth: 0,
};

function traits(over = {}) {
  return {
    image: new DataView(new ArrayBuffer(0)),
    values: f32View([-2, -1, 0, 1, 2, 4]),
    shape: [2, 3],
    colormap: "a",
    colormaps: ["a"],
    luts: new DataView(rampLut().buffer),
    opacity: 1,
    sign: "signed",
    clip_percentile: 100,
    label: "pathway gradient",
    message: "",
    display_width: 300,
    smooth: 0,
    values_sparsity: 0.7,
    preview_sparsity: 0.7,
    ...stackTraits,
    ...over,
  };
}

const deps = { decodeImage: async () => ({ width: 3, height: 2 }), devicePixelRatio: () => 1, containerWidth: () => 0 };
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
const labelText = () => el.querySelector(".critpath-overlay-colorbar-label").textContent;

describe("scrub stack", () => {
  it("decodes a level with its scale and zero code (0 stays exactly 0)", () => {
    expect(Array.from(decodeLevel(stackBytes, stackTraits.stack_ranges, 0, 2, 3))).toEqual([0, 25.5, 51, 76.5, 102, 127.5]);
    expect(Array.from(decodeLevel(stackBytes, stackTraits.stack_ranges, 1, 2, 3))).toEqual([0, 0, 0, 0, 0, 62]);
  });

  it("picks the nearest level, the lower one on a tie", () => {
    const levels = [0, 0.05, 0.1, 0.95, 0.99];
    expect(nearestLevel(levels, 0.06)).toBe(1);
    expect(nearestLevel(levels, 0.075)).toBe(1);
    expect(nearestLevel(levels, 0.98)).toBe(4);
    expect(nearestLevel(levels, 0.5)).toBe(2);
    expect(nearestLevel([], 0.5)).toBe(-1);
  });

  it("a slider move paints the nearest level at once; the exact map then replaces it", () => {
    const model = makeModel(traits());
    const w = createOverlay({ model, el }, deps);
    expect(el.dataset.preview).toBe("");
    expect(el.dataset.stackLevels).toBe("2");
    const exactPixels = Array.from(w.state.pixels);
    const before = Number(el.dataset.paintCount);
    model.set("preview_sparsity", 0.85); // what jslink does in the browser: no kernel
    expect(Number(el.dataset.paintCount)).toBe(before + 1);
    expect(el.dataset.preview).toBe("0.9");
    expect(labelText()).toContain("≈ sparsity 0.90");
    // level 1: only the last pixel is attributed -> the others are transparent
    const alphas = Array.from(w.state.pixels).filter((_, i) => i % 4 === 3);
    expect(alphas.slice(0, 5)).toEqual([0, 0, 0, 0, 0]);
    expect(alphas[5]).toBe(255);
    // an exact map for an older slider value does not take the preview's place
    model.setFromKernel({ values: f32View([1, 1, 1, 1, 1, 1]), values_sparsity: 0.8 });
    expect(el.dataset.preview).toBe("0.9");
    // the kernel's exact answer for 0.85 wins
    model.setFromKernel({ values: f32View([-2, -1, 0, 1, 2, 4]), values_sparsity: 0.85 });
    expect(el.dataset.preview).toBe("");
    expect(labelText()).toBe("pathway gradient");
    expect(Array.from(w.state.pixels)).toEqual(exactPixels);
    w.cleanup();
  });

  it("no preview under another sign or blur, a wrong size, or without an exact pathway map", () => {
    for (const over of [{ sign: "positive" }, { smooth: 0.01 }, { stack_levels: [0.5] }, { values_sparsity: -1 }, { stack: new DataView(new ArrayBuffer(0)) }]) {
      const model = makeModel(traits(over));
      const w = createOverlay({ model, el }, deps);
      model.set("preview_sparsity", 0.85);
      expect(el.dataset.preview, JSON.stringify(Object.keys(over))).toBe("");
      w.cleanup();
    }
  });
});
