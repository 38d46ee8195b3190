import { describe, expect, it } from "vitest";
import { cellAt, displaySize, paintLayers, sizeCanvas } from "../lib/canvas.js";

describe("canvas geometry", () => {
  it("backing store is CSS size times devicePixelRatio", () => {
    const c = document.createElement("canvas");
    expect(sizeCanvas(c, 320, 240, 2)).toEqual({ width: 640, height: 480 });
    expect(c.width).toBe(640);
    expect(c.style.width).toBe("320px");
    expect(c.style.height).toBe("240px");
    expect(sizeCanvas(c, 100, 50, 1.5)).toEqual({ width: 150, height: 75 });
    expect(sizeCanvas(c, 100, 50, undefined)).toEqual({ width: 100, height: 50 });
  });
  it("display size keeps the aspect ratio and fits a narrower container", () => {
    expect(displaySize(320, 0.75, 0)).toEqual({ cssWidth: 320, cssHeight: 240 });
    expect(displaySize(320, 0.5, 200)).toEqual({ cssWidth: 200, cssHeight: 100 });
    expect(displaySize(320, 0.5, 1000)).toEqual({ cssWidth: 320, cssHeight: 160 });
  });
  it("maps a pointer position to a map cell", () => {
    expect(cellAt(0, 0, 320, 160, 2, 4)).toEqual({ row: 0, col: 0 });
    expect(cellAt(319.9, 159.9, 320, 160, 2, 4)).toEqual({ row: 1, col: 3 });
    expect(cellAt(100, 90, 320, 160, 2, 4)).toEqual({ row: 1, col: 1 });
    expect(cellAt(-1, 5, 320, 160, 2, 4)).toBe(null);
    expect(cellAt(320, 5, 320, 160, 2, 4)).toBe(null);
  });
  it("paints the photo smoothed and the map with nearest-neighbour", () => {
    const calls = [];
    const ctx = {
      imageSmoothingEnabled: true,
      setTransform() {},
      clearRect: (...a) => calls.push(["clear", ...a]),
      drawImage(src, ...a) {
        calls.push([src, ...a, this.imageSmoothingEnabled]);
      },
    };
    paintLayers(ctx, { width: 64, height: 32, image: "IMG", mapLayer: "MAP" });
    expect(calls).toEqual([
      ["clear", 0, 0, 64, 32],
      ["IMG", 0, 0, 64, 32, true],
      ["MAP", 0, 0, 64, 32, false],
    ]);
  });
});
