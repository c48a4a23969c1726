//! Fragmented MP4 (CMAF, ISO/IEC 23000-19) packaging for browsers: MSE and LL-HLS.
//!
//! A [`Muxer`] turns a [`StreamHeader`] into an *init segment* (`ftyp` + `moov`, one track per
//! video or audio track a browser can decode) and frames into *fragments* (`moof` + `mdat`),
//! either one frame at a time (MSE) or a run of frames per track (an LL-HLS part). It performs
//! no I/O and reads no clock.
//!
//! What it does to the media:
//! - H.264 / H.265 access units go from Annex-B (start codes) to 4-byte length prefixes, without
//!   access unit delimiters and parameter sets (those live in the init segment's `avcC`/`hvcC`;
//!   a change of parameter sets is a new header, hence a new init segment). SEI stays: the test
//!   pattern's frame counter is there.
//! - Decode times start at zero at the first frame the muxer sees, on a clock shared by every
//!   track, so audio and video stay in step; presentation times keep their offset from decode
//!   times (B-frames: `pts - dts`, signed, in a version 1 `trun`).
//! - G.711 (PCMA/PCMU) has no MP4 sample entry browsers accept: such tracks are left out of
//!   the init segment and their frames are dropped ([`Muxer::tracks`] tells which remain).

use bytes::Bytes;
use mp4_atom::{
    Audio, Avc1, Avcc, AvccExt, Codec as SampleEntry, Dinf, Dops, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Hvc1,
    HvcCArray, Hvcc, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd,
    Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd, esds,
};

use crate::{Codec, Frame, StreamHeader, TrackId, TrackInfo, TrackKind, aac, annexb, h264, h265};

/// Sample flags (ISO/IEC 14496-12 §8.8.3.1) of a sample others may start decoding at.
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// Sample flags of a sample that depends on others (`sample_depends_on` 1, non-sync).
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;
/// The movie timescale; only `mvhd` uses it, every track has its own.
const MOVIE_TIMESCALE: u32 = 1000;

/// Why a stream cannot be packaged as fMP4.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    /// The header has no track a browser can decode from MP4.
    #[error("no track can be packaged as fMP4 (codecs: {codecs})")]
    NoTrack {
        /// The header's codecs, comma-separated.
        codecs: String,
    },
    /// A track's configuration is incomplete or invalid.
    #[error(transparent)]
    Track(#[from] crate::MediaError),
    /// A box could not be encoded (a value out of its field's range).
    #[error("encoding {what}: {reason}")]
    Encode {
        /// The box.
        what: &'static str,
        /// What the encoder said.
        reason: String,
    },
    /// A fragment was asked for a track the init segment does not have.
    #[error("track {0} is not in the init segment")]
    UnknownTrack(TrackId),
}

/// One frame of a run, with the duration the caller decided for it (in its track's clock).
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The frame.
    pub frame: &'a Frame,
    /// Its duration: the next frame's decode time minus its own, or an estimate.
    pub duration: u32,
}

/// The frames of one track in one fragment, in decode order.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The track.
    pub track: TrackId,
    /// Its frames.
    pub samples: &'a [Sample<'a>],
}

/// A track of the init segment.
#[derive(Debug, Clone)]
struct MuxTrack {
    source: TrackId,
    /// The MP4 track id (1-based).
    id: u32,
    codec: Codec,
    timescale: u32,
    /// The decode time that maps to zero, in this track's clock.
    origin: Option<i64>,
    /// The last frame's decode time and the step before it, for [`Muxer::frame_fragment`].
    last_dts: Option<i64>,
    last_step: u32,
}

/// The fMP4 packaging of one stream: its init segment and the fragments of its frames.
#[derive(Debug, Clone)]
pub struct Muxer {
    tracks: Vec<MuxTrack>,
    init: Bytes,
    mime: String,
    /// `mfhd` sequence numbers: one per fragment, from 1.
    sequence: u32,
    /// The shared time origin: a first frame's decode time and its clock rate.
    origin: Option<(i64, u32)>,
}

impl Muxer {
    /// The packaging of a stream with this header.
    pub fn new(header: &StreamHeader) -> Result<Self, Fmp4Error> {
        let mut m = Self { tracks: Vec::new(), init: Bytes::new(), mime: String::new(), sequence: 0, origin: None };
        m.set_header(header)?;
        Ok(m)
    }

    /// Takes a new header (new parameter sets): a new init segment, the same time origin and
    /// fragment numbering, so a player that re-initialises continues its timeline.
    pub fn set_header(&mut self, header: &StreamHeader) -> Result<(), Fmp4Error> {
        let usable: Vec<&TrackInfo> = header.tracks.iter().filter(|t| packable(t.codec)).collect();
        if usable.is_empty() {
            let codecs: Vec<&str> = header.tracks.iter().map(|t| t.codec.name()).collect();
            return Err(Fmp4Error::NoTrack { codecs: codecs.join(",") });
        }
        let mut traks = Vec::with_capacity(usable.len());
        let mut codecs = Vec::with_capacity(usable.len());
        let mut tracks = Vec::with_capacity(usable.len());
        for (i, t) in usable.iter().enumerate() {
            let id = i as u32 + 1;
            let (trak, codec_string) = trak(t, id)?;
            traks.push(trak);
            codecs.push(codec_string);
            let old = self.tracks.iter().find(|o| o.source == t.id && o.timescale == t.clock_rate);
            tracks.push(MuxTrack {
                source: t.id,
                id,
                codec: t.codec,
                timescale: t.clock_rate,
                origin: old.and_then(|o| o.origin),
                last_dts: old.and_then(|o| o.last_dts),
                last_step: old.map_or_else(|| default_step(t), |o| o.last_step),
            });
        }
        let ftyp = Ftyp {
            major_brand: FourCC::new(b"iso6"),
            minor_version: 0,
            compatible_brands: vec![FourCC::new(b"iso6"), FourCC::new(b"cmfc"), FourCC::new(b"mp41")],
        };
        let moov = Moov {
            mvhd: Mvhd {
                timescale: MOVIE_TIMESCALE,
                rate: 1.into(),
                volume: 1.into(),
                next_track_id: traks.len() as u32 + 1,
                ..Default::default()
            },
            mvex: Some(Mvex {
                mehd: None,
                trex: tracks
                    .iter()
                    .map(|t| Trex { track_id: t.id, default_sample_description_index: 1, ..Default::default() })
                    .collect(),
            }),
            trak: traks,
            ..Default::default()
        };
        let mut init = Vec::with_capacity(1024);
        encode(&ftyp, "ftyp", &mut init)?;
        encode(&moov, "moov", &mut init)?;
        let kind = if tracks.iter().any(|t| t.codec.kind() == TrackKind::Video) { "video" } else { "audio" };
        self.mime = format!("{kind}/mp4; codecs=\"{}\"", codecs.join(","));
        self.init = init.into();
        self.tracks = tracks;
        Ok(())
    }

    /// Sets the time origin (the decode time `dts`, in `clock`, that maps to zero) unless the
    /// muxer has one: muxers of one stream's tracks in separate renditions share it, so their
    /// timelines line up.
    pub fn set_origin(&mut self, dts: i64, clock: u32) {
        self.origin.get_or_insert((dts, clock));
    }

    /// The init segment (`ftyp` + `moov`).
    pub fn init_segment(&self) -> &Bytes {
        &self.init
    }

    /// The MIME type with codecs, as `MediaSource.isTypeSupported` and HLS's `CODECS` want it
    /// (`video/mp4; codecs="avc1.64001f,mp4a.40.2"`).
    pub fn mime_type(&self) -> &str {
        &self.mime
    }

    /// The RFC 6381 codec strings, comma-separated (what goes between the quotes of the MIME
    /// type).
    pub fn codecs(&self) -> &str {
        self.mime.split_once("codecs=\"").map_or("", |(_, c)| c.trim_end_matches('"'))
    }

    /// The source track ids in the init segment, in MP4 track order.
    pub fn tracks(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.tracks.iter().map(|t| t.source)
    }

    /// One fragment holding one frame, for MSE: its duration is not known until the next frame
    /// of its track, so it is the step between that track's last two frames (a player uses the
    /// next fragment's decode time, so a wrong estimate costs nothing). `None` for a track the
    /// init segment leaves out.
    pub fn frame_fragment(&mut self, frame: &Frame) -> Option<Result<Bytes, Fmp4Error>> {
        let t = self.tracks.iter_mut().find(|t| t.source == frame.track)?;
        if let Some(last) = t.last_dts {
            let step = frame.dts.saturating_sub(last);
            if step > 0 && step <= i64::from(t.timescale) * 10 {
                t.last_step = step as u32;
            }
        }
        let duration = t.last_step;
        let sample = [Sample { frame, duration }];
        Some(self.fragment(&[Run { track: frame.track, samples: &sample }]))
    }

    /// One fragment (`moof` + `mdat`) holding `runs`: one `traf` per run, its samples' data in
    /// the `mdat` in the same order.
    pub fn fragment(&mut self, runs: &[Run<'_>]) -> Result<Bytes, Fmp4Error> {
        if self.origin.is_none()
            && let Some(first) = runs.iter().find_map(|r| r.samples.first())
        {
            let clock = self.tracks.iter().find(|t| t.source == first.frame.track).map_or(1, |t| t.timescale);
            self.origin = Some((first.frame.dts, clock));
        }
        self.sequence = self.sequence.wrapping_add(1);
        let mut data = Vec::new();
        let mut trafs = Vec::with_capacity(runs.len());
        let mut offsets = Vec::with_capacity(runs.len());
        for run in runs {
            let origin = self.origin;
            let t = self.tracks.iter_mut().find(|t| t.source == run.track).ok_or(Fmp4Error::UnknownTrack(run.track))?;
            let Some(first) = run.samples.first() else { continue };
            let zero = *t
                .origin
                .get_or_insert_with(|| origin.map_or(first.frame.dts, |(dts, clock)| rescale(dts, clock, t.timescale)));
            let video = t.codec.kind() == TrackKind::Video;
            offsets.push(data.len());
            let mut entries = Vec::with_capacity(run.samples.len());
            for s in run.samples {
                let before = data.len();
                if video {
                    length_prefixed(t.codec, &s.frame.payload, &mut data);
                } else {
                    data.extend_from_slice(&s.frame.payload);
                }
                let key = !video || s.frame.is_keyframe();
                entries.push(TrunEntry {
                    duration: Some(s.duration),
                    size: Some((data.len() - before) as u32),
                    flags: Some(if key { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
                    cts: video.then(|| s.frame.pts.saturating_sub(s.frame.dts)),
                });
            }
            if let Some(last) = run.samples.last() {
                t.last_dts = Some(last.frame.dts);
            }
            trafs.push(Traf {
                tfhd: Tfhd { track_id: t.id, default_base_is_moof: true, ..Default::default() },
                tfdt: Some(Tfdt { base_media_decode_time: first.frame.dts.saturating_sub(zero).max(0) as u64 }),
                trun: vec![Trun { data_offset: Some(0), samples: entries.into() }],
                ..Default::default()
            });
        }
        let mut moof = Moof { mfhd: Mfhd { sequence_number: self.sequence }, traf: trafs };
        // The data offsets count from the moof's first byte; its size does not depend on them.
        let mut probe = Vec::with_capacity(256);
        encode(&moof, "moof", &mut probe)?;
        let base = probe.len() + 8;
        for (traf, offset) in moof.traf.iter_mut().zip(&offsets) {
            if let Some(trun) = traf.trun.first_mut() {
                trun.data_offset = Some(i32::try_from(base + offset).map_err(|_| too_big("trun data offset"))?);
            }
        }
        let mut out = Vec::with_capacity(base + data.len());
        encode(&moof, "moof", &mut out)?;
        let mdat_size = u32::try_from(data.len() + 8).map_err(|_| too_big("mdat"))?;
        out.extend_from_slice(&mdat_size.to_be_bytes());
        out.extend_from_slice(b"mdat");
        out.extend_from_slice(&data);
        Ok(out.into())
    }
}

fn too_big(what: &'static str) -> Fmp4Error {
    Fmp4Error::Encode { what, reason: "larger than 4 GiB".into() }
}

fn encode<A: Encode>(atom: &A, what: &'static str, out: &mut Vec<u8>) -> Result<(), Fmp4Error> {
    atom.encode(out).map_err(|e| Fmp4Error::Encode { what, reason: e.to_string() })
}

/// `value` in clock `from` expressed in clock `to`.
fn rescale(value: i64, from: u32, to: u32) -> i64 {
    if from == to || from == 0 {
        return value;
    }
    let v = i128::from(value) * i128::from(to) / i128::from(from);
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Whether fMP4 carries `codec` (a browser decodes it from MP4): not G.711.
pub fn packable(codec: Codec) -> bool {
    matches!(codec, Codec::H264 | Codec::H265 | Codec::Aac | Codec::Opus)
}

/// A frame's duration before any step between two frames is known: 25 fps video, one AAC
/// frame (1,024 samples), one 20 ms Opus packet.
fn default_step(t: &TrackInfo) -> u32 {
    match t.codec {
        Codec::Aac => 1024,
        Codec::Opus => 960,
        _ => t.clock_rate / 25,
    }
}

/// Appends an Annex-B access unit's NAL units with 4-byte length prefixes, leaving out access
/// unit delimiters and parameter sets.
fn length_prefixed(codec: Codec, annex_b: &[u8], out: &mut Vec<u8>) {
    out.reserve(annex_b.len());
    for nal in annexb::nals(annex_b) {
        let skip = match codec {
            Codec::H264 => {
                matches!(h264::nal_type(nal), Some(h264::NAL_AUD | h264::NAL_SPS | h264::NAL_PPS))
            }
            Codec::H265 => {
                matches!(h265::nal_type(nal), Some(h265::NAL_AUD | h265::NAL_VPS | h265::NAL_SPS | h265::NAL_PPS))
            }
            _ => false,
        };
        if !skip {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
    }
}

/// A track's `trak` box and its RFC 6381 codec string.
fn trak(t: &TrackInfo, id: u32) -> Result<(Trak, String), Fmp4Error> {
    let (entry, codec_string, width, height) = match t.codec {
        Codec::H264 | Codec::H265 => {
            let params = t.video_params()?;
            let visual = Visual {
                data_reference_index: 1,
                width: clamp_u16(params.width),
                height: clamp_u16(params.height),
                ..Default::default()
            };
            let entry = if t.codec == Codec::H264 { avc1(t, visual)? } else { hvc1(t, visual)? };
            (entry, params.codec_string, params.width, params.height)
        }
        Codec::Aac => {
            let p = t.audio_params()?;
            let asc = t.parameter_sets.first().map(|b| b.to_vec()).unwrap_or_default();
            let cfg =
                aac::parse_config(&asc).map_err(|reason| crate::MediaError::InvalidTrack { track: t.id, reason })?;
            let freq_index = aac::frequency_index(cfg.sample_rate).unwrap_or(0x0f);
            let entry = Mp4a {
                audio: audio(t),
                esds: Esds {
                    es_desc: esds::EsDescriptor {
                        es_id: id as u16,
                        dec_config: esds::DecoderConfig {
                            object_type_indication: 0x40,
                            stream_type: 5,
                            dec_specific: Some(esds::DecoderSpecific {
                                profile: cfg.object_type,
                                freq_index,
                                chan_conf: cfg.channel_config,
                                raw: asc,
                            }),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                },
                btrt: None,
                taic: None,
            };
            (entry.into(), p.codec_string.unwrap_or_else(|| "mp4a.40.2".into()), 0, 0)
        }
        Codec::Opus => {
            t.audio_params()?;
            let entry = Opus {
                audio: audio(t),
                dops: Dops {
                    output_channel_count: t.channels as u8,
                    // RFC 7845 §5.1: what encoders commonly use; a live stream joined midway
                    // has no start to trim anyway.
                    pre_skip: 312,
                    input_sample_rate: 48_000,
                    output_gain: 0,
                    channel_mapping: None,
                },
                btrt: None,
            };
            (entry.into(), "opus".into(), 0, 0)
        }
        Codec::Pcma | Codec::Pcmu => unreachable_codec(t)?,
    };
    let video = t.codec.kind() == TrackKind::Video;
    let trak = Trak {
        tkhd: Tkhd {
            track_id: id,
            enabled: true,
            in_movie: true,
            volume: if video { 0.into() } else { 1.into() },
            width: clamp_u16(width).into(),
            height: clamp_u16(height).into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: t.clock_rate, language: "und".into(), ..Default::default() },
            hdlr: Hdlr {
                handler: FourCC::new(if video { b"vide" } else { b"soun" }),
                name: if video { "mediamesh video" } else { "mediamesh audio" }.into(),
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
                // An empty sample table, `stco` included: ISO BMFF requires one, and Firefox
                // refuses an init segment without it (Chromium does not mind).
                stbl: Stbl { stsd: Stsd { codecs: vec![entry] }, stco: Some(Stco::default()), ..Default::default() },
                ..Default::default()
            },
        },
        ..Default::default()
    };
    Ok((trak, codec_string))
}

fn unreachable_codec(t: &TrackInfo) -> Result<(SampleEntry, String, u32, u32), Fmp4Error> {
    Err(Fmp4Error::Track(crate::MediaError::InvalidTrack {
        track: t.id,
        reason: format!("{} has no fMP4 sample entry", t.codec),
    }))
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

fn audio(t: &TrackInfo) -> Audio {
    Audio {
        data_reference_index: 1,
        channel_count: t.channels,
        sample_size: 16,
        // The field is 16.16 fixed point: rates above 65,535 Hz do not fit (the mdhd timescale
        // carries the real one).
        sample_rate: clamp_u16(t.clock_rate).into(),
    }
}

fn parameter_set(t: &TrackInfo, is: impl Fn(&[u8]) -> bool, name: &str) -> Result<Vec<u8>, Fmp4Error> {
    t.parameter_sets
        .iter()
        .find(|p| is(p))
        .map(|p| p.to_vec())
        .ok_or_else(|| Fmp4Error::Track(crate::MediaError::InvalidTrack { track: t.id, reason: format!("no {name}") }))
}

fn avc1(t: &TrackInfo, visual: Visual) -> Result<SampleEntry, Fmp4Error> {
    let sps = parameter_set(t, |p| h264::nal_type(p) == Some(h264::NAL_SPS), "SPS")?;
    let pps = parameter_set(t, |p| h264::nal_type(p) == Some(h264::NAL_PPS), "PPS")?;
    let mut avcc = Avcc::new(&sps, &pps).map_err(|e| Fmp4Error::Encode { what: "avcC", reason: e.to_string() })?;
    avcc.ext = h264::sps_chroma(&sps)?.map(|c| AvccExt {
        chroma_format: c.format,
        bit_depth_luma: c.bit_depth_luma,
        bit_depth_chroma: c.bit_depth_chroma,
        sequence_parameter_sets_ext: Vec::new(),
    });
    Ok(Avc1 { visual, avcc, ..Default::default() }.into())
}

fn hvc1(t: &TrackInfo, visual: Visual) -> Result<SampleEntry, Fmp4Error> {
    let vps = parameter_set(t, |p| h265::nal_type(p) == Some(h265::NAL_VPS), "VPS")?;
    let sps = parameter_set(t, |p| h265::nal_type(p) == Some(h265::NAL_SPS), "SPS")?;
    let pps = parameter_set(t, |p| h265::nal_type(p) == Some(h265::NAL_PPS), "PPS")?;
    let (_, p) = h265::parse_sps_profile(&sps)?;
    let array = |nal_unit_type: u8, nal: Vec<u8>| HvcCArray { completeness: true, nal_unit_type, nalus: vec![nal] };
    let hvcc = Hvcc {
        configuration_version: 1,
        general_profile_space: p.profile_space,
        general_tier_flag: p.tier,
        general_profile_idc: p.profile_idc,
        general_profile_compatibility_flags: p.compatibility.to_be_bytes(),
        general_constraint_indicator_flags: p.constraint,
        general_level_idc: p.level_idc,
        min_spatial_segmentation_idc: 0,
        parallelism_type: 0,
        chroma_format_idc: p.chroma_format_idc,
        bit_depth_luma_minus8: p.bit_depth_luma_minus8,
        bit_depth_chroma_minus8: p.bit_depth_chroma_minus8,
        avg_frame_rate: 0,
        constant_frame_rate: 0,
        num_temporal_layers: p.temporal_layers,
        temporal_id_nested: p.temporal_id_nested,
        length_size_minus_one: 3,
        arrays: vec![array(h265::NAL_VPS, vps), array(h265::NAL_SPS, sps.clone()), array(h265::NAL_PPS, pps)],
    };
    Ok(Hvc1 { visual, hvcc, ..Default::default() }.into())
}

#[cfg(test)]
mod tests;
