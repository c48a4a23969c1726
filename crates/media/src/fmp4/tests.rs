use bytes::Bytes;
use mp4_atom::{Any, Decode, Moof};
use proptest::prelude::*;

use super::*;
use crate::FrameFlags;
use crate::h264::tests::{PPS_320X240, SPS_320X240};

fn h264_track(id: TrackId) -> TrackInfo {
    TrackInfo::h264(id, Bytes::from_static(SPS_320X240), Bytes::from_static(PPS_320X240))
}

fn aac_track(id: TrackId) -> TrackInfo {
    TrackInfo::audio(id, Codec::Aac, 48_000, 2, Some(Bytes::from_static(&[0x11, 0x90])))
}

fn frame(track: TrackId, dts: i64, pts: i64, key: bool, payload: &'static [u8]) -> Frame {
    Frame {
        track,
        flags: FrameFlags::keyframe(key),
        seq: 0,
        pts,
        dts,
        capture_us: 0,
        payload: Bytes::from_static(payload),
    }
}

/// Every top-level box of `data`, decoded.
fn boxes(data: &[u8]) -> Vec<Any> {
    let mut cursor = std::io::Cursor::new(data);
    let mut out = Vec::new();
    while (cursor.position() as usize) < data.len() {
        out.push(Any::decode(&mut cursor).unwrap());
    }
    out
}

fn moof_and_mdat(fragment: &[u8]) -> (Moof, Vec<u8>) {
    let mut b = boxes(fragment).into_iter();
    let (Some(Any::Moof(moof)), Some(Any::Mdat(mdat)), None) = (b.next(), b.next(), b.next()) else {
        panic!("a fragment is one moof and one mdat")
    };
    (moof, mdat.data)
}

#[test]
fn init_segment_describes_video_and_audio() {
    let header = StreamHeader { tracks: vec![h264_track(0), aac_track(1)] };
    let m = Muxer::new(&header).unwrap();
    let b = boxes(m.init_segment());
    let [Any::Ftyp(ftyp), Any::Moov(moov)] = &b[..] else { panic!("ftyp then moov, got {b:?}") };
    assert_eq!(ftyp.major_brand, FourCC::new(b"iso6"));
    assert_eq!(moov.trak.len(), 2);
    assert_eq!(moov.mvex.as_ref().unwrap().trex.len(), 2);
    let video = &moov.trak[0];
    assert_eq!((video.tkhd.track_id, video.mdia.mdhd.timescale), (1, 90_000));
    let SampleEntry::Avc1(avc1) = &video.mdia.minf.stbl.stsd.codecs[0] else { panic!("avc1") };
    assert_eq!((avc1.visual.width, avc1.visual.height), (320, 240));
    assert_eq!(avc1.avcc.sequence_parameter_sets, vec![SPS_320X240.to_vec()]);
    assert_eq!(avc1.avcc.picture_parameter_sets, vec![PPS_320X240.to_vec()]);
    let audio = &moov.trak[1];
    assert_eq!((audio.tkhd.track_id, audio.mdia.mdhd.timescale), (2, 48_000));
    let SampleEntry::Mp4a(mp4a) = &audio.mdia.minf.stbl.stsd.codecs[0] else { panic!("mp4a") };
    assert_eq!(mp4a.audio.channel_count, 2);
    let dec = mp4a.esds.es_desc.dec_config.dec_specific.as_ref().unwrap();
    assert_eq!((dec.profile, dec.freq_index, dec.chan_conf), (2, 3, 2));
    assert_eq!(m.mime_type(), "video/mp4; codecs=\"avc1.42c00d,mp4a.40.2\"");
    assert_eq!(m.codecs(), "avc1.42c00d,mp4a.40.2");
    for trak in &moov.trak {
        let stco = trak.mdia.minf.stbl.stco.as_ref();
        assert_eq!(stco.map(|s| s.entries.len()), Some(0), "an empty stco, which Firefox requires");
    }
}

#[test]
fn h265_and_opus_get_their_sample_entries() {
    use crate::h265::tests::{PPS, SPS, VPS};
    let video = TrackInfo::h265(0, Bytes::from_static(VPS), Bytes::from_static(SPS), Bytes::from_static(PPS));
    let opus = TrackInfo::audio(1, Codec::Opus, 48_000, 2, None);
    let m = Muxer::new(&StreamHeader { tracks: vec![video, opus] }).unwrap();
    let b = boxes(m.init_segment());
    let Any::Moov(moov) = &b[1] else { panic!("moov") };
    let SampleEntry::Hvc1(hvc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else { panic!("hvc1") };
    assert_eq!((hvc1.hvcc.general_profile_idc, hvc1.hvcc.general_level_idc), (1, 60));
    assert_eq!(hvc1.hvcc.arrays.iter().map(|a| a.nal_unit_type).collect::<Vec<_>>(), vec![32, 33, 34]);
    assert_eq!(hvc1.hvcc.length_size_minus_one, 3);
    let SampleEntry::Opus(o) = &moov.trak[1].mdia.minf.stbl.stsd.codecs[0] else { panic!("Opus") };
    assert_eq!(o.dops.output_channel_count, 2);
    assert_eq!(m.codecs(), "hvc1.1.6.L60.90,opus");
}

#[test]
fn g711_is_left_out_and_alone_is_an_error() {
    let pcma = TrackInfo::audio(1, Codec::Pcma, 8000, 1, None);
    let m = Muxer::new(&StreamHeader { tracks: vec![h264_track(0), pcma.clone()] }).unwrap();
    assert_eq!(m.tracks().collect::<Vec<_>>(), vec![0]);
    let mut m2 = m.clone();
    assert!(m2.frame_fragment(&frame(1, 0, 0, true, b"\xd5\xd5")).is_none(), "G.711 frames are dropped");
    let e = Muxer::new(&StreamHeader { tracks: vec![pcma] }).unwrap_err();
    assert_eq!(e, Fmp4Error::NoTrack { codecs: "pcma".into() });
}

#[test]
fn an_incomplete_track_is_an_error_naming_it() {
    let mut t = h264_track(4);
    t.parameter_sets.truncate(1);
    let e = Muxer::new(&StreamHeader { tracks: vec![t] }).unwrap_err();
    assert!(e.to_string().contains("track 4"), "{e}");
}

#[test]
fn fragment_carries_length_prefixed_nals_without_parameter_sets() {
    let mut m = Muxer::new(&StreamHeader { tracks: vec![h264_track(0)] }).unwrap();
    // AUD, SPS, PPS, SEI, IDR slice.
    let au: &'static [u8] =
        b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x68\xce\x00\x00\x01\x06\x05\x01\x80\x00\x00\x00\x01\x65\x88\x84";
    let f = m.frame_fragment(&frame(0, 9000, 9000, true, au)).unwrap().unwrap();
    let (moof, mdat) = moof_and_mdat(&f);
    assert_eq!(mdat, b"\x00\x00\x00\x04\x06\x05\x01\x80\x00\x00\x00\x03\x65\x88\x84");
    assert_eq!(moof.mfhd.sequence_number, 1);
    let traf = &moof.traf[0];
    assert_eq!(traf.tfhd.track_id, 1);
    assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 0, "the first frame is time zero");
    let trun = &traf.trun[0];
    let entry = trun.samples.get(0).unwrap();
    assert_eq!(entry.size, Some(mdat.len() as u32));
    assert_eq!(entry.flags, Some(SYNC_SAMPLE));
    assert_eq!(entry.duration, Some(3600), "25 fps until a step is known");
    // The data offset points at the mdat's payload.
    let offset = trun.data_offset.unwrap() as usize;
    assert_eq!(&f[offset..], &mdat[..]);
}

#[test]
fn b_frames_keep_signed_composition_offsets() {
    let mut m = Muxer::new(&StreamHeader { tracks: vec![h264_track(0)] }).unwrap();
    let slice: &'static [u8] = b"\x00\x00\x00\x01\x41\x9a";
    // Decode order I P B with pts I=3600, P=10800, B=7200; dts 0, 3600, 7200.
    let frames =
        [frame(0, 0, 3600, true, slice), frame(0, 3600, 10800, false, slice), frame(0, 7200, 7200, false, slice)];
    let mut times = Vec::new();
    for f in &frames {
        let (moof, _) = moof_and_mdat(&m.frame_fragment(f).unwrap().unwrap());
        let e = moof.traf[0].trun[0].samples.get(0).unwrap();
        times.push((moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time, e.cts, e.duration, e.flags));
    }
    assert_eq!(
        times,
        vec![
            (0, Some(3600), Some(3600), Some(SYNC_SAMPLE)),
            (3600, Some(7200), Some(3600), Some(NON_SYNC_SAMPLE)),
            (7200, Some(0), Some(3600), Some(NON_SYNC_SAMPLE)),
        ]
    );
    // A negative offset (pts before dts, as some encoders shift) survives in a version 1 trun.
    let (moof, _) = moof_and_mdat(&m.frame_fragment(&frame(0, 10800, 9000, false, slice)).unwrap().unwrap());
    assert_eq!(moof.traf[0].trun[0].samples.get(0).unwrap().cts, Some(-1800));
}

#[test]
fn audio_and_video_share_one_time_origin() {
    let header = StreamHeader { tracks: vec![h264_track(0), aac_track(1)] };
    let mut m = Muxer::new(&header).unwrap();
    let slice: &'static [u8] = b"\x00\x00\x00\x01\x65\x88";
    // Video starts at 1 s on its 90 kHz clock; audio's first frame is 0.5 s later on 48 kHz.
    m.frame_fragment(&frame(0, 90_000, 90_000, true, slice)).unwrap().unwrap();
    let (moof, mdat) = moof_and_mdat(&m.frame_fragment(&frame(1, 72_000, 72_000, true, b"\x21\x10")).unwrap().unwrap());
    assert_eq!(moof.traf[0].tfhd.track_id, 2);
    assert_eq!(moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time, 24_000);
    assert_eq!(mdat, b"\x21\x10", "audio payloads go in as they are");
    assert_eq!(moof.traf[0].trun[0].samples.get(0).unwrap().duration, Some(1024));
}

#[test]
fn a_new_header_keeps_the_timeline() {
    let mut m = Muxer::new(&StreamHeader { tracks: vec![h264_track(0)] }).unwrap();
    let slice: &'static [u8] = b"\x00\x00\x00\x01\x65\x88";
    m.frame_fragment(&frame(0, 1000, 1000, true, slice)).unwrap().unwrap();
    m.frame_fragment(&frame(0, 4000, 4000, false, slice)).unwrap().unwrap();
    m.set_header(&StreamHeader { tracks: vec![h264_track(0), aac_track(1)] }).unwrap();
    let (moof, _) = moof_and_mdat(&m.frame_fragment(&frame(0, 7000, 7000, true, slice)).unwrap().unwrap());
    assert_eq!(moof.mfhd.sequence_number, 3);
    assert_eq!(moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time, 6000);
    assert_eq!(moof.traf[0].trun[0].samples.get(0).unwrap().duration, Some(3000));
}

#[test]
fn a_run_of_two_tracks_is_one_moof() {
    let header = StreamHeader { tracks: vec![h264_track(0), aac_track(1)] };
    let mut m = Muxer::new(&header).unwrap();
    let v = [frame(0, 0, 0, true, b"\x00\x00\x01\x65\x01"), frame(0, 3600, 3600, false, b"\x00\x00\x01\x41\x02\x03")];
    let a = [frame(1, 0, 0, true, b"\xaa\xbb\xcc")];
    let vs: Vec<Sample<'_>> = v.iter().map(|frame| Sample { frame, duration: 3600 }).collect();
    let as_: Vec<Sample<'_>> = a.iter().map(|frame| Sample { frame, duration: 1024 }).collect();
    let f = m.fragment(&[Run { track: 0, samples: &vs }, Run { track: 1, samples: &as_ }]).unwrap();
    let (moof, mdat) = moof_and_mdat(&f);
    assert_eq!(moof.traf.len(), 2);
    let video_at = moof.traf[0].trun[0].data_offset.unwrap() as usize;
    let audio_at = moof.traf[1].trun[0].data_offset.unwrap() as usize;
    assert_eq!(&f[video_at..audio_at], b"\x00\x00\x00\x02\x65\x01\x00\x00\x00\x03\x41\x02\x03");
    assert_eq!(&f[audio_at..], b"\xaa\xbb\xcc");
    assert_eq!(mdat.len(), 16);
    assert!(m.fragment(&[Run { track: 9, samples: &vs }]).is_err(), "unknown tracks are an error");
}

proptest! {
    /// Whatever the frames, each fragment decodes, its decode time is the frame's minus the
    /// first one's, and its sample is exactly the frame's NAL units with length prefixes.
    #[test]
    fn fragments_decode_and_keep_times(
        steps in proptest::collection::vec(1i64..20_000, 1..40),
        offsets in proptest::collection::vec(-3000i64..9000, 40),
        nal_lens in proptest::collection::vec(1usize..300, 40),
        start in -1_000_000i64..1_000_000,
    ) {
        let mut m = Muxer::new(&StreamHeader { tracks: vec![h264_track(0)] }).unwrap();
        let mut dts = start;
        for (i, step) in steps.iter().enumerate() {
            let mut payload = vec![0, 0, 0, 1, 0x41];
            payload.extend((0..nal_lens[i]).map(|j| (j % 250 + 1) as u8));
            let f = Frame {
                track: 0, flags: FrameFlags::keyframe(i == 0), seq: i as u64,
                pts: dts + offsets[i], dts, capture_us: 0, payload: Bytes::from(payload.clone()),
            };
            let out = m.frame_fragment(&f).unwrap().unwrap();
            let (moof, mdat) = moof_and_mdat(&out);
            prop_assert_eq!(moof.mfhd.sequence_number, i as u32 + 1);
            prop_assert_eq!(moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time, (dts - start) as u64);
            let e = moof.traf[0].trun[0].samples.get(0).unwrap();
            prop_assert_eq!(e.cts, Some(offsets[i]));
            prop_assert_eq!(&mdat[..4], &((payload.len() - 4) as u32).to_be_bytes()[..]);
            prop_assert_eq!(&mdat[4..], &payload[4..]);
            dts += step;
        }
    }
}
