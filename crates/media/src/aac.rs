//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) that describes a stream.

/// What an AudioSpecificConfig says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC-LC).
    pub object_type: u8,
    /// Sampling frequency in Hz.
    pub sample_rate: u32,
    /// Channel configuration (0 = defined elsewhere, 1–7 standard layouts).
    pub channel_config: u8,
}

const RATES: [u32; 13] =
    [96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350];

/// Parses the first fields of an AudioSpecificConfig.
pub fn parse_config(asc: &[u8]) -> Result<AacConfig, String> {
    let mut bits = Bits { data: asc, pos: 0 };
    let mut object_type = bits.take(5).ok_or("AudioSpecificConfig is truncated")? as u8;
    if object_type == 31 {
        object_type = 32 + bits.take(6).ok_or("AudioSpecificConfig is truncated")? as u8;
    }
    if object_type == 0 {
        return Err("AudioSpecificConfig has audio object type 0".into());
    }
    let index = bits.take(4).ok_or("AudioSpecificConfig is truncated")? as usize;
    let sample_rate = if index == 15 {
        bits.take(24).ok_or("AudioSpecificConfig is truncated")?
    } else {
        *RATES.get(index).ok_or_else(|| format!("AudioSpecificConfig has reserved sampling index {index}"))?
    };
    let channel_config = bits.take(4).ok_or("AudioSpecificConfig is truncated")? as u8;
    Ok(AacConfig { object_type, sample_rate, channel_config })
}

/// An AudioSpecificConfig for AAC-LC (2 bytes).
pub fn lc_config(sample_rate: u32, channels: u8) -> Option<[u8; 2]> {
    let index = RATES.iter().position(|r| *r == sample_rate)? as u16;
    let v: u16 = (2 << 11) | (index << 7) | (u16::from(channels & 0x0f) << 3);
    Some(v.to_be_bytes())
}

/// The sampling frequency index of a rate (0x0f, "explicit", for a rate without one).
pub fn frequency_index(sample_rate: u32) -> Option<u8> {
    RATES.iter().position(|r| *r == sample_rate).map(|i| i as u8)
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_configs() {
        // AAC-LC 48 kHz stereo, as ffmpeg and GStreamer write it.
        assert_eq!(
            parse_config(&[0x11, 0x90]).unwrap(),
            AacConfig { object_type: 2, sample_rate: 48_000, channel_config: 2 }
        );
        assert_eq!(
            parse_config(&[0x12, 0x08]).unwrap(),
            AacConfig { object_type: 2, sample_rate: 44_100, channel_config: 1 }
        );
        assert_eq!(lc_config(48_000, 2), Some([0x11, 0x90]));
        assert_eq!(parse_config(&lc_config(8_000, 1).unwrap()).unwrap().sample_rate, 8_000);
        assert!(parse_config(&[0x11]).is_err());
        assert!(parse_config(&[0x17, 0x90]).is_err(), "reserved sampling index");
    }
}
