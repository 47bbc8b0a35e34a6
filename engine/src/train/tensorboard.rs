//! TensorBoard scalars: an event file (`events.out.tfevents.poker-pipe`)
//! that `tensorboard --logdir` reads, written as a stage trains.
//!
//! The format is TensorFlow's record file of `Event` protobufs: each record
//! is its length (u64 LE), a masked CRC-32C of the length, the bytes and a
//! masked CRC-32C of the bytes. The messages are the few fields of
//! `tensorflow/core/util/event.proto` and `summary.proto` that scalars use,
//! declared here with prost (no protoc); the CRC comes from `crc32c`.
//!
//! On resume, events past the checkpoint's step are dropped first, as
//! [`super::metrics::MetricsLog`] does, so TensorBoard never shows the
//! steps that were redone twice. An event's wall time is its step (seconds
//! after 1970), not the clock: like every training record, the file is the
//! same bytes for the same seed, resumed or not, so caching and resume
//! checks hold; TensorBoard's step axis is the one to plot against.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use super::metrics::{MetricsError, MetricsSink};

/// The event file's name: TensorBoard finds files whose name holds
/// `tfevents`; a fixed name lets a resumed run continue the same file.
pub const EVENTS_FILE: &str = "events.out.tfevents.poker-pipe";

/// The first event of every file, naming the format version.
const FILE_VERSION: &str = "brain.Event:2";

/// `tensorflow.Event`, the fields scalars need.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` holding a `simple_value` (a 32-bit float,
/// which is how TensorBoard's scalar dashboard stores every scalar).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// Appends scalar events to one event file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsSink for EventWriter {
    fn step(&mut self, step: u64, values: &[(&str, f64)]) -> Result<(), MetricsError> {
        self.scalars(step, values)
    }
}

impl EventWriter {
    /// Start a fresh event file in `dir`.
    pub fn create(dir: &Path) -> Result<Self, MetricsError> {
        Self::open(dir, None)
    }

    /// Continue the event file in `dir` after a resume from the checkpoint
    /// of `step`, keeping only the events up to it.
    pub fn resume(dir: &Path, step: u64) -> Result<Self, MetricsError> {
        Self::open(dir, Some(step))
    }

    fn open(dir: &Path, resume_step: Option<u64>) -> Result<Self, MetricsError> {
        let path = dir.join(EVENTS_FILE);
        let kept = match resume_step {
            Some(step) => read_events(&path)
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.file_version.is_none() && e.step <= step as i64)
                .collect(),
            None => Vec::new(),
        };
        std::fs::create_dir_all(dir).map_err(io(&path))?;
        let file = File::create(&path).map_err(io(&path))?;
        let mut writer = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        writer.write(&Event {
            file_version: Some(FILE_VERSION.to_string()),
            ..Event::default()
        })?;
        for event in &kept {
            writer.write(event)?;
        }
        writer.flush()?;
        Ok(writer)
    }

    /// Scalars of one step, each under its tag. Non-finite values are
    /// written as they are (TensorBoard shows NaN and inf).
    pub fn scalars<S: AsRef<str>>(
        &mut self,
        step: u64,
        values: &[(S, f64)],
    ) -> Result<(), MetricsError> {
        if values.is_empty() {
            return Ok(());
        }
        let value = values
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.as_ref().to_string(),
                simple_value: Some(*v as f32),
            })
            .collect();
        self.write(&Event {
            wall_time: step as f64,
            step: step as i64,
            file_version: None,
            summary: Some(Summary { value }),
        })?;
        self.flush()
    }

    fn write(&mut self, event: &Event) -> Result<(), MetricsError> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.out.write_all(&record).map_err(io(&self.path))
    }

    /// Flushed after every step, so TensorBoard shows a run as it trains.
    fn flush(&mut self) -> Result<(), MetricsError> {
        self.out.flush().map_err(io(&self.path))
    }
}

/// The CRC TFRecord files carry: CRC-32C rotated and offset, so a CRC
/// stored inside checked data does not check itself.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |source| MetricsError {
        path: path.to_path_buf(),
        source,
    }
}

/// Every whole, intact event of the file at `path`; reading stops at the
/// first torn or corrupt record (what a killed writer leaves).
pub fn read_events(path: &Path) -> std::io::Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut events = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 12 {
        let (len_bytes, tail) = rest.split_at(8);
        let len_crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if masked_crc(len_bytes) != len_crc {
            break;
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let Ok(len) = usize::try_from(u64::from_le_bytes(len)) else {
            break;
        };
        let tail = &tail[4..];
        if tail.len() < len.saturating_add(4) {
            break;
        }
        let (data, tail) = tail.split_at(len);
        let data_crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if masked_crc(data) != data_crc {
            break;
        }
        match Event::decode(data) {
            Ok(event) => events.push(event),
            Err(_) => break,
        }
        rest = &tail[4..];
    }
    Ok(events)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scalars_of(events: &[Event]) -> Vec<(i64, String, f32)> {
        events
            .iter()
            .filter_map(|e| Some((e.step, e.summary.as_ref()?)))
            .flat_map(|(step, s)| {
                s.value
                    .iter()
                    .map(move |v| (step, v.tag.clone(), v.simple_value.unwrap_or(f32::NAN)))
            })
            .collect()
    }

    #[test]
    fn masked_crc_matches_tensorflow_for_a_known_record() {
        // CRC-32C("123456789") is 0xE3069283 (the standard check value);
        // masked (rotated right by 15, plus 0xa282ead8) it is 0xC78AB0E5,
        // worked out by hand in Python.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn writes_a_version_event_then_scalars_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(1, &[("loss", 2.5), ("lr", 5e-4)]).unwrap();
        w.scalars(2, &[("loss", 1.25)]).unwrap();
        drop(w);
        let events = read_events(&dir.path().join(EVENTS_FILE)).unwrap();
        assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
        assert_eq!(events[1].wall_time, 1.0, "the wall time is the step");
        assert_eq!(
            scalars_of(&events),
            vec![
                (1, "loss".to_string(), 2.5),
                (1, "lr".to_string(), 5e-4),
                (2, "loss".to_string(), 1.25)
            ]
        );
    }

    #[test]
    fn resume_keeps_events_up_to_the_checkpoint_and_stops_at_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        for step in 1..=5 {
            w.scalars(step, &[("loss", 1.0 / step as f64)]).unwrap();
        }
        drop(w);
        // A kill in the middle of a write leaves a torn last record.
        let path = dir.path().join(EVENTS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 6);

        let mut w = EventWriter::resume(dir.path(), 3).unwrap();
        for step in 4..=6 {
            w.scalars(step, &[("loss", 1.0 / step as f64)]).unwrap();
        }
        drop(w);
        let events = read_events(&path).unwrap();
        let steps: Vec<i64> = scalars_of(&events).iter().map(|s| s.0).collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            events.iter().filter(|e| e.file_version.is_some()).count(),
            1
        );
    }
}
