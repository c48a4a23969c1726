//! A stream of the catalog: its source (test pattern, ffmpeg, RTSP camera, clip) and each
//! source's settings.

use std::path::PathBuf;

use mediamesh_tunnel::settings::{BackoffSettings, Seconds};
use serde::{Deserialize, Serialize};

/// One stream of the catalog: its source, and how the hub describes it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "StreamDocument", into = "StreamDocument")]
pub struct StreamConfig {
    /// Free text shown in the hub's API.
    pub description: Option<String>,
    /// Where the frames come from.
    pub source: SourceConfig,
}

/// Where a stream's frames come from: exactly one kind of source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// The built-in test pattern (H.264 encoded in-process).
    TestPattern(TestPatternConfig),
    /// An ffmpeg command producing H.264 or H.265.
    Ffmpeg(FfmpegConfig),
    /// An RTSP camera (or any RTSP server).
    Rtsp(RtspConfig),
    /// A recorded H.264 clip played in a loop at its frame rate.
    File(FileConfig),
}

impl StreamConfig {
    /// A stream from `source`, without a description.
    pub fn new(source: SourceConfig) -> Self {
        Self { description: None, source }
    }

    /// The test pattern's settings, if that is the source.
    pub fn test_pattern_mut(&mut self) -> Option<&mut TestPatternConfig> {
        match &mut self.source {
            SourceConfig::TestPattern(tp) => Some(tp),
            _ => None,
        }
    }

    /// The description the hub shows: the configured one, else the kind of source. Never
    /// built from a URL or ffmpeg's arguments, which hold passwords and tokens: a camera is
    /// shown by its host alone.
    pub fn describe(&self) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        match &self.source {
            SourceConfig::TestPattern(tp) => format!("test pattern {}x{}@{}", tp.width, tp.height, tp.fps),
            SourceConfig::Ffmpeg(ff) => format!("ffmpeg ({})", ff.codec.name()),
            SourceConfig::Rtsp(r) => {
                let host = url::Url::parse(&r.url).ok().and_then(|u| u.host_str().map(str::to_owned));
                format!("RTSP camera at {}", host.unwrap_or_else(|| "an unparsable URL".into()))
            }
            SourceConfig::File(f) => {
                let name = f.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                format!("clip {name} at {} fps", f.fps)
            }
        }
    }
}

/// A stream as written in YAML: one key per kind of source, exactly one of them set.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamDocument {
    /// Free text shown in the hub's API.
    #[serde(default)]
    pub description: Option<String>,
    /// The built-in test pattern (H.264 encoded in-process).
    #[serde(default)]
    pub test_pattern: Option<TestPatternConfig>,
    /// An ffmpeg command producing H.264 or H.265.
    #[serde(default)]
    pub ffmpeg: Option<FfmpegConfig>,
    /// An RTSP camera (or any RTSP server).
    #[serde(default)]
    pub rtsp: Option<RtspConfig>,
    /// A recorded H.264 clip played in a loop at its frame rate.
    #[serde(default)]
    pub file: Option<FileConfig>,
}

/// Why a stream as written has no single source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SourceChoiceError {
    /// None of the source keys.
    #[error("a stream needs a source: testPattern, ffmpeg, rtsp or file")]
    None,
    /// More than one.
    #[error("a stream has more than one source (testPattern, ffmpeg, rtsp, file); choose one")]
    Several,
}

impl TryFrom<StreamDocument> for StreamConfig {
    type Error = SourceChoiceError;

    fn try_from(d: StreamDocument) -> Result<Self, SourceChoiceError> {
        let mut sources = [
            d.test_pattern.map(SourceConfig::TestPattern),
            d.ffmpeg.map(SourceConfig::Ffmpeg),
            d.rtsp.map(SourceConfig::Rtsp),
            d.file.map(SourceConfig::File),
        ]
        .into_iter()
        .flatten();
        match (sources.next(), sources.next()) {
            (None, _) => Err(SourceChoiceError::None),
            (Some(source), None) => Ok(Self { description: d.description, source }),
            (Some(_), Some(_)) => Err(SourceChoiceError::Several),
        }
    }
}

impl From<StreamConfig> for StreamDocument {
    fn from(s: StreamConfig) -> Self {
        let mut d = StreamDocument { description: s.description, ..StreamDocument::default() };
        match s.source {
            SourceConfig::TestPattern(tp) => d.test_pattern = Some(tp),
            SourceConfig::Ffmpeg(ff) => d.ffmpeg = Some(ff),
            SourceConfig::Rtsp(r) => d.rtsp = Some(r),
            SourceConfig::File(f) => d.file = Some(f),
        }
        d
    }
}

/// A recorded H.264 clip (raw Annex-B, as `ffmpeg -f h264` writes it) played in a loop, paced
/// by the wall clock: a camera stand-in that costs no encoding (the bench uses it).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// The clip. It is read whole when the stream starts (at most 256 MiB) and must begin
    /// with, or contain, a keyframe with its SPS and PPS.
    pub path: PathBuf,
    /// Frames per second. Default 25.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Stamp every frame with the test-pattern SEI (frame counter and capture time, replacing
    /// stamps the clip carries), so viewers can measure latency and count gaps. Default false.
    #[serde(default)]
    pub stamp: bool,
}

/// An RTSP camera.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RtspConfig {
    /// `rtsp://[user:password@]host[:port]/path`. Credentials in the URL are used for Basic or
    /// Digest authentication and never logged.
    pub url: String,
    /// `tcp` (RTP interleaved on the RTSP connection; default) or `udp`.
    #[serde(default)]
    pub transport: RtspTransport,
    /// User name, if not in the URL.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, if not in the URL.
    #[serde(default)]
    pub password: Option<String>,
    /// Redial backoff while the stream is wanted (default: 0.2 s doubling to 1 s).
    #[serde(default = "default_camera_backoff")]
    pub reconnect: BackoffSettings,
}

impl RtspConfig {
    /// A camera at `url`, over TCP, with the default redial backoff.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            transport: RtspTransport::Tcp,
            username: None,
            password: None,
            reconnect: default_camera_backoff(),
        }
    }
}

impl std::fmt::Debug for RtspConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspConfig")
            .field("url", &crate::redact::text(&self.url))
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// How RTP travels from a camera.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved on the RTSP TCP connection.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// Redialling a camera is cheap (a refused connection costs nothing), and a camera back from a
/// restart should be picked up within a second.
fn default_camera_backoff() -> BackoffSettings {
    BackoffSettings { initial: Seconds::from_millis(200), max: Seconds::new(1), reset_after: Seconds::new(10) }
}

/// The built-in test-pattern camera.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestPatternConfig {
    /// Width in pixels (even). Default 1280.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Height in pixels (even). Default 720.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Frames per second. Default 25.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Target bitrate in kbit/s. Default 2000.
    #[serde(default = "default_kbps")]
    pub bitrate_kbps: u32,
    /// Frames from one keyframe to the next. Default 50.
    #[serde(default = "default_gop")]
    pub gop: u32,
    /// Text drawn on the picture; default: the stream name.
    #[serde(default)]
    pub label: Option<String>,
}

impl Default for TestPatternConfig {
    fn default() -> Self {
        Self {
            width: default_width(),
            height: default_height(),
            fps: default_fps(),
            bitrate_kbps: default_kbps(),
            gop: default_gop(),
            label: None,
        }
    }
}

/// A stream produced by ffmpeg: `ffmpeg <input...> <encode...> -an -f h264 pipe:1`.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FfmpegConfig {
    /// Input arguments, e.g. `["-rtsp_transport", "tcp", "-i", "rtsp://camera/stream"]`.
    pub input: Vec<String>,
    /// Output codec arguments; default `["-c:v", "copy"]` (the input must be H.264).
    #[serde(default = "default_encode")]
    pub encode: Vec<String>,
    /// The ffmpeg executable. Default `ffmpeg` (searched in PATH).
    #[serde(default = "default_ffmpeg")]
    pub binary: PathBuf,
    /// The video codec ffmpeg outputs: `h264` (default) or `h265`.
    #[serde(default)]
    pub codec: VideoCodecName,
}

impl std::fmt::Debug for FfmpegConfig {
    /// With URL credentials masked: the arguments often hold a camera's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |args: &[String]| args.iter().map(|a| crate::redact::text(a).into_owned()).collect::<Vec<_>>();
        f.debug_struct("FfmpegConfig")
            .field("input", &masked(&self.input))
            .field("encode", &masked(&self.encode))
            .field("binary", &self.binary)
            .field("codec", &self.codec)
            .finish()
    }
}

/// A video codec as named in configuration.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodecName {
    /// H.264.
    #[default]
    H264,
    /// H.265 / HEVC.
    H265,
}

impl VideoCodecName {
    /// As written in configuration.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodecName::H264 => "h264",
            VideoCodecName::H265 => "h265",
        }
    }
}

impl TestPatternConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(16..=3840).contains(&self.width) || !(16..=2160).contains(&self.height) {
            return Err(format!("{}x{} is outside 16x16..3840x2160", self.width, self.height));
        }
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return Err(format!("{}x{}: width and height must be even", self.width, self.height));
        }
        if !(1..=120).contains(&self.fps) {
            return Err(format!("fps {} is outside 1..120", self.fps));
        }
        if !(10..=100_000).contains(&self.bitrate_kbps) {
            return Err(format!("bitrateKbps {} is outside 10..100000", self.bitrate_kbps));
        }
        if self.gop == 0 {
            return Err("gop must be at least 1".into());
        }
        Ok(())
    }
}

fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
pub(super) fn default_fps() -> u32 {
    25
}
fn default_kbps() -> u32 {
    2000
}
fn default_gop() -> u32 {
    50
}
pub(super) fn default_encode() -> Vec<String> {
    vec!["-c:v".into(), "copy".into()]
}
pub(super) fn default_ffmpeg() -> PathBuf {
    "ffmpeg".into()
}
