// The capture stamp: the test-pattern camera burns its capture wall-clock time (ms since the
// Unix epoch) and frame counter into the bottom-right corner of every picture as a block code
// (crates/edge/src/source/testpattern/blockcode.rs writes it; this file and the browser tests
// read it). Shared by the page and the tests: keep the two in step.
//
// Layout, in pixels of the picture: cell = max(8, floor(height / 45)) rounded down to even;
// a black box of 20 x 6 cells whose bottom-right corner is the picture's; inside it, one cell
// in from its edges, 4 rows of 18 cells carrying 72 bits, row by row, most significant bit
// first: 6 bytes of capture time, 2 bytes of frame counter (its low 16 bits), 1 byte of
// CRC-8 (polynomial 0x07) over those 8 XORed with 0x55. A white cell is 1; the box's corner
// cells must be black.
"use strict";

// A property of the window rather than a `const`: Firefox's WebDriver (Marionette) runs test
// scripts where only the window's properties are visible.
globalThis.MediameshStamp = (() => {
  const COLS = 18, ROWS = 4;

  function layout(width, height) {
    const cell = Math.max(8, Math.floor(height / 45)) & ~1;
    const w = (COLS + 2) * cell, h = (ROWS + 2) * cell;
    if (width < w || height < h) return null;
    return { cell, x: width - w, y: height - h, width: w, height: h };
  }

  function crc8(bytes) {
    let crc = 0;
    for (const b of bytes) {
      crc ^= b;
      for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    }
    return crc;
  }

  // Reads the stamp from RGBA pixels of the stamp box (`layout`'s rectangle, `boxWidth` wide).
  function decode(rgba, cell, boxWidth) {
    const half = Math.max(1, cell >> 2);
    const light = (col, row) => {
      const cx = col * cell + (cell >> 1), cy = row * cell + (cell >> 1);
      let sum = 0, n = 0;
      for (let y = cy - half; y < cy + half; y++) {
        for (let x = cx - half; x < cx + half; x++) {
          const p = (y * boxWidth + x) * 4;
          sum += rgba[p] + rgba[p + 1] + rgba[p + 2];
          n += 3;
        }
      }
      return sum / n > 128;
    };
    for (const [col, row] of [[0, 0], [COLS + 1, 0], [0, ROWS + 1], [COLS + 1, ROWS + 1]]) {
      if (light(col, row)) return null;
    }
    const bytes = new Array(9).fill(0);
    for (let i = 0; i < COLS * ROWS; i++) {
      if (light(1 + (i % COLS), 1 + Math.floor(i / COLS))) bytes[i >> 3] |= 0x80 >> (i & 7);
    }
    if ((crc8(bytes.slice(0, 8)) ^ 0x55) !== bytes[8]) return null;
    let captureMs = 0;
    for (let i = 0; i < 6; i++) captureMs = captureMs * 256 + bytes[i];
    return { captureMs, counter: bytes[6] * 256 + bytes[7] };
  }

  // Reads the stamp of the frame `video` shows now, drawing its corner onto `canvas`.
  function read(video, canvas) {
    const l = layout(video.videoWidth, video.videoHeight);
    if (!l) return null;
    if (canvas.width !== l.width || canvas.height !== l.height) {
      canvas.width = l.width;
      canvas.height = l.height;
    }
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(video, l.x, l.y, l.width, l.height, 0, 0, l.width, l.height);
    return decode(ctx.getImageData(0, 0, l.width, l.height).data, l.cell, l.width);
  }

  // Glass-to-glass latency of a frame: when it is on screen (requestVideoFrameCallback's
  // expectedDisplayTime, on the performance clock) minus its capture time (wall clock; same
  // machine, same clock). `null` without a stamp.
  function latency(video, canvas, metadata) {
    const s = read(video, canvas);
    if (!s) return null;
    const shown = performance.timeOrigin + (metadata ? metadata.expectedDisplayTime : performance.now());
    return { ms: shown - s.captureMs, counter: s.counter, captureMs: s.captureMs };
  }

  return { layout, crc8, decode, read, latency };
})();
