// Test doubles: a backbone-like model and a fake 2d canvas context (jsdom has no canvas).
import { vi } from "vitest";

export function makeModel(initial) {
  const attrs = { ...initial };
  const listeners = new Map();
  const model = {
    saves: 0,
    get: (k) => attrs[k],
    set(k, v) {
      const old = attrs[k];
      attrs[k] = v;
      if (old !== v) for (const fn of [...(listeners.get(`change:${k}`) || [])]) fn();
    },
    /** as if the kernel changed several traits at once (hold_sync): set all, then fire */
    setFromKernel(obj) {
      const changed = Object.keys(obj).filter((k) => attrs[k] !== obj[k]);
      Object.assign(attrs, obj);
      for (const k of changed) for (const fn of [...(listeners.get(`change:${k}`) || [])]) fn();
    },
    on(ev, fn) {
      if (!listeners.has(ev)) listeners.set(ev, new Set());
      listeners.get(ev).add(fn);
    },
    off(ev, fn) {
      listeners.get(ev)?.delete(fn);
    },
    save_changes() {
      model.saves++;
    },
    listenerCount() {
      let n = 0;
      for (const s of listeners.values()) n += s.size;
      return n;
    },
  };
  return model;
}

/** Float32 little-endian bytes of a row-major array, as a DataView like ipywidgets gives. */
export function f32View(arr) {
  const f = new Float32Array(arr);
  return new DataView(f.buffer);
}

/** A LUT where entry i is (i, 255 - i, 7, 255): easy to invert in assertions. */
export function rampLut() {
  const lut = new Uint8Array(1024);
  for (let i = 0; i < 256; i++) {
    lut[i * 4] = i;
    lut[i * 4 + 1] = 255 - i;
    lut[i * 4 + 2] = 7;
    lut[i * 4 + 3] = 255;
  }
  return lut;
}

/** Replace HTMLCanvasElement.prototype.getContext by a recording fake 2d context. */
export function installFakeCanvas() {
  const contexts = new WeakMap();
  const spy = vi.spyOn(HTMLCanvasElement.prototype, "getContext").mockImplementation(function () {
    if (!contexts.has(this)) {
      const canvas = this;
      const ctx = {
        canvas,
        calls: [],
        imageSmoothingEnabled: true,
        imageSmoothingQuality: "low",
        setTransform(...a) {
          this.calls.push(["setTransform", ...a]);
        },
        clearRect(...a) {
          this.calls.push(["clearRect", ...a]);
        },
        createImageData(w, h) {
          return { width: w, height: h, data: new Uint8ClampedArray(w * h * 4) };
        },
        putImageData(img, x, y) {
          this.calls.push(["putImageData", x, y]);
          canvas._pixels = img;
        },
        drawImage(src, ...a) {
          this.calls.push(["drawImage", src, ...a, { smoothing: this.imageSmoothingEnabled }]);
        },
        globalAlpha: 1,
        globalCompositeOperation: "source-over",
        fillStyle: "#000000",
        save() {
          this.calls.push(["save"]);
        },
        restore() {
          this.calls.push(["restore"]);
          this.globalAlpha = 1;
          this.globalCompositeOperation = "source-over";
        },
        fillRect(...a) {
          const how = { op: this.globalCompositeOperation, alpha: this.globalAlpha, fill: this.fillStyle };
          this.calls.push(["fillRect", ...a, how]);
        },
      };
      contexts.set(this, ctx);
    }
    return contexts.get(this);
  });
  return { spy, contextOf: (c) => c.getContext("2d") };
}
