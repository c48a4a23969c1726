//! The capture stamp burned into the picture: the capture wall-clock time and the frame counter
//! as a block code in the bottom-right corner, which survives H.264 compression, so a viewer
//! that only has the decoded picture (a browser's `<video>` drawn onto a canvas) can read when
//! the frame was captured and measure glass-to-glass latency.
//!
//! The page's reader is `crates/hub/web/stamp.js`; the two must agree on this layout:
//! cell = max(8, height / 45) rounded down to even pixels; a black box of 20 x 6 cells whose
//! bottom-right corner is the picture's; inside it, one cell in from its edges, 4 rows of 18
//! cells carrying 72 bits row by row, most significant bit first: 6 bytes of capture time (ms
//! since the Unix epoch), 2 bytes of frame counter (its low 16 bits), 1 byte of CRC-8
//! (polynomial 0x07) over those 8, XORed with 0x55 (so a blank box does not read as a stamp).
//! A white cell is 1. A reader also checks the box's corner cells are black.

/// Cells per row of bits.
const COLS: usize = 18;
/// Rows of bits.
const ROWS: usize = 4;
/// Luma of a 0 cell and of the box around the bits (BT.601 black).
const BLACK: u8 = 16;
/// Luma of a 1 cell (BT.601 white).
const WHITE: u8 = 235;
/// XORed into the check byte: without it eight zero bytes would check.
const CHECK_XOR: u8 = 0x55;

/// Where the stamp goes in a picture of `width`×`height`: (cell size, box x, box y), or `None`
/// when the picture is too small to hold it.
pub fn layout(width: usize, height: usize) -> Option<(usize, usize, usize)> {
    let cell = (height / 45).max(8) & !1;
    let (w, h) = ((COLS + 2) * cell, (ROWS + 2) * cell);
    (width >= w && height >= h).then(|| (cell, width - w, height - h))
}

/// CRC-8 with polynomial 0x07, initial value 0.
pub fn crc8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |mut crc, b| {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
        }
        crc
    })
}

fn bits(capture_ms: u64, counter: u64) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[..6].copy_from_slice(&capture_ms.to_be_bytes()[2..]);
    b[6..8].copy_from_slice(&(counter as u16).to_be_bytes());
    b[8] = crc8(&b[..8]) ^ CHECK_XOR;
    b
}

/// Draws the stamp of a frame captured at `capture_us` into 4:2:0 planes (`y` is `width`
/// wide; `u`, `v` half that), chroma neutral.
pub fn draw(y: &mut [u8], u: &mut [u8], v: &mut [u8], width: usize, height: usize, capture_us: u64, counter: u64) {
    let Some((cell, x0, y0)) = layout(width, height) else { return };
    let fill = |y: &mut [u8], x: usize, top: usize, w: usize, h: usize, luma: u8| {
        for row in top..top + h {
            y[row * width + x..row * width + x + w].fill(luma);
        }
    };
    fill(y, x0, y0, (COLS + 2) * cell, (ROWS + 2) * cell, BLACK);
    for row in y0 / 2..(y0 + (ROWS + 2) * cell) / 2 {
        let at = row * width / 2 + x0 / 2;
        u[at..at + (COLS + 2) * cell / 2].fill(128);
        v[at..at + (COLS + 2) * cell / 2].fill(128);
    }
    let bytes = bits(capture_us / 1000, counter);
    for i in 0..COLS * ROWS {
        if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
            fill(y, x0 + (1 + i % COLS) * cell, y0 + (1 + i / COLS) * cell, cell, cell, WHITE);
        }
    }
}

/// Reads the stamp from a decoded luma plane (`stride` bytes per row): (capture time in ms, low
/// 16 bits of the counter), or `None` when there is none or its check fails.
pub fn read(y: &[u8], stride: usize, width: usize, height: usize) -> Option<(u64, u16)> {
    let (cell, x0, y0) = layout(width, height)?;
    let half = (cell / 4).max(1);
    // Whether the cell at (col, row) of the box is light.
    let light = |col: usize, row: usize| -> Option<bool> {
        let (cx, cy) = (x0 + col * cell + cell / 2, y0 + row * cell + cell / 2);
        let mut sum = 0u32;
        for r in cy - half..cy + half {
            sum += y.get(r * stride + cx - half..r * stride + cx + half)?.iter().map(|p| u32::from(*p)).sum::<u32>();
        }
        Some(sum / (4 * half * half) as u32 > 128)
    };
    for (col, row) in [(0, 0), (COLS + 1, 0), (0, ROWS + 1), (COLS + 1, ROWS + 1)] {
        if light(col, row)? {
            return None;
        }
    }
    let mut bytes = [0u8; 9];
    for i in 0..COLS * ROWS {
        if light(1 + i % COLS, 1 + i / COLS)? {
            bytes[i / 8] |= 0x80 >> (i % 8);
        }
    }
    if crc8(&bytes[..8]) ^ CHECK_XOR != bytes[8] {
        return None;
    }
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&bytes[..6]);
    Some((u64::from_be_bytes(ms), u16::from_be_bytes([bytes[6], bytes[7]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_scales_with_the_picture() {
        assert_eq!(layout(320, 240), Some((8, 160, 192)));
        assert_eq!(layout(1280, 720), Some((16, 960, 624)));
        assert_eq!(layout(1920, 1080), Some((24, 1440, 936)));
        assert_eq!(layout(100, 40), None, "too small for the code");
    }

    #[test]
    fn crc8_matches_the_usual_check_value() {
        // CRC-8/SMBUS ("123456789") = 0xF4.
        assert_eq!(crc8(b"123456789"), 0xf4);
    }

    #[test]
    fn what_is_drawn_reads_back_and_a_damaged_code_does_not() {
        let (w, h) = (640, 360);
        let (mut y, mut u, mut v) = (vec![128u8; w * h], vec![128u8; w * h / 4], vec![128u8; w * h / 4]);
        draw(&mut y, &mut u, &mut v, w, h, 1_764_000_123_456_789, 70_001);
        assert_eq!(read(&y, w, w, h), Some((1_764_000_123_456, (70_001 % 65_536) as u16)));
        let (cell, x0, y0) = layout(w, h).unwrap();
        // Flip one bit cell.
        let (cx, cy) = (x0 + cell + cell / 2, y0 + cell + cell / 2);
        let old = y[cy * w + cx];
        for row in cy - cell / 2..cy + cell / 2 {
            y[row * w + cx - cell / 2..row * w + cx + cell / 2].fill(if old > 128 { BLACK } else { WHITE });
        }
        assert_eq!(read(&y, w, w, h), None, "the CRC catches a wrong cell");
        assert_eq!(read(&vec![128u8; w * h], w, w, h), None, "no code, no stamp");
        assert_eq!(read(&vec![BLACK; w * h], w, w, h), None, "a black corner is no stamp");
        assert_eq!(read(&vec![WHITE; w * h], w, w, h), None, "nor a white one");
    }
}
