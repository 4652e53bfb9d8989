//! Newline-delimited JSON frames over any async byte stream, with a size bound so a peer
//! cannot make the other side buffer without limit.

use futures::{SinkExt, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

/// Largest frame accepted: hook reports carry bounded output, so 16 MiB is generous.
pub const MAX_FRAME: usize = 16 << 20;
/// What each direction's buffer starts with; it grows to the largest frame seen. The codec's
/// default, 8 KiB each way, was 16 KiB a connection: 16 MiB of a control plane's memory with
/// a thousand agents, most frames being a few hundred bytes.
const FIRST_BUFFER: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("connection closed by peer")]
    Closed,
    #[error("frame larger than the connection accepts")]
    TooLarge,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl From<LinesCodecError> for FramingError {
    fn from(e: LinesCodecError) -> Self {
        match e {
            LinesCodecError::MaxLineLengthExceeded => FramingError::TooLarge,
            LinesCodecError::Io(e) => FramingError::Io(e),
        }
    }
}

/// `frame` as one line of JSON, refused when the peer could not accept it (the codec does
/// not check the length of what it sends, only of what it reads).
pub fn encode<T: Serialize>(frame: &T) -> Result<String, FramingError> {
    let line = serde_json::to_string(frame)?;
    if line.len() > MAX_FRAME {
        return Err(FramingError::TooLarge);
    }
    Ok(line)
}

/// The sending half of a split connection (lines of JSON).
pub type Writer<S> = futures::stream::SplitSink<Framed<S, LinesCodec>, String>;
/// The receiving half of a split connection.
pub type Reader<S> = futures::stream::SplitStream<Framed<S, LinesCodec>>;

/// A framed connection.
pub struct Connection<S> {
    inner: Framed<S, LinesCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Connection::with_max_frame(stream, MAX_FRAME)
    }

    /// A connection that reads frames of at most `max` bytes (a peer not yet known, whose
    /// first frame must be small, gets a small limit).
    pub fn with_max_frame(stream: S, max: usize) -> Self {
        let codec = LinesCodec::new_with_max_length(max);
        Connection {
            inner: Framed::with_capacity(stream, codec, FIRST_BUFFER),
        }
    }

    /// The same connection reading frames of up to [`MAX_FRAME`] bytes from now on, keeping
    /// whatever it has read and not framed yet (and its buffers as they are: rebuilding it
    /// from parts would grow both to the codec's default).
    pub fn with_full_limit(mut self) -> Self {
        *self.inner.codec_mut() = LinesCodec::new_with_max_length(MAX_FRAME);
        self
    }

    pub async fn send<T: Serialize>(&mut self, frame: &T) -> Result<(), FramingError> {
        let line = encode(frame)?;
        self.inner.send(line).await?;
        Ok(())
    }

    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, FramingError> {
        match self.inner.next().await {
            None => Err(FramingError::Closed),
            Some(line) => Ok(serde_json::from_str(&line?)?),
        }
    }

    /// Splits into independent halves for a reader task and a writer task.
    pub fn split(self) -> (Writer<S>, Reader<S>) {
        self.inner.split()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Envelope, OperatorRequest};

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut a = Connection::new(a);
        let mut b = Connection::new(b);
        a.send(&Envelope {
            id: 7,
            body: OperatorRequest::Ping,
        })
        .await
        .unwrap();
        let got: Envelope<OperatorRequest> = b.recv().await.unwrap();
        assert_eq!(got.id, 7);
        assert!(matches!(got.body, OperatorRequest::Ping));

        // A peer that ignores the limit writes the raw line; the writer blocks once the pipe
        // is full, so it runs beside the reader.
        let (mut raw, c) = tokio::io::duplex(1 << 20);
        let mut b = Connection::new(c);
        drop(a);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut huge = "x".repeat(MAX_FRAME + 10);
            huge.push('\n');
            let _ = raw.write_all(huge.as_bytes()).await;
        });
        let err = b.recv::<String>().await.unwrap_err();
        drop(b);
        let _ = writer.await;
        assert!(matches!(err, FramingError::TooLarge), "{err}");
    }

    /// Frames many times the first buffer, in both directions, through a pipe smaller than
    /// one of them: the buffers grow as they must and no frame is cut or merged.
    #[tokio::test]
    async fn frames_far_beyond_the_first_buffer_arrive_whole_both_ways() {
        let (a, b) = tokio::io::duplex(4096);
        let (mut a, mut b) = (Connection::new(a), Connection::new(b));
        let sizes = [10, FIRST_BUFFER - 3, FIRST_BUFFER, 300_000, 5, 70_000];
        let frames: Vec<String> = sizes.iter().map(|n| "y".repeat(*n)).collect();
        let sent = frames.clone();
        let echo = tokio::spawn(async move {
            for _ in 0..sent.len() {
                let got: String = b.recv().await.unwrap();
                b.send(&format!("{got}!")).await.unwrap();
            }
        });
        for frame in &frames {
            a.send(frame).await.unwrap();
            let back: String = a.recv().await.unwrap();
            assert_eq!(back, format!("{frame}!"));
        }
        echo.await.unwrap();
    }

    #[test]
    fn an_oversized_frame_is_refused_before_it_is_sent() {
        assert!(matches!(
            encode(&"x".repeat(MAX_FRAME)),
            Err(FramingError::TooLarge)
        ));
        assert_eq!(encode(&"ok").unwrap(), "\"ok\"");
    }

    #[tokio::test]
    async fn malformed_json_is_reported() {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(b"{not json}\n").await.unwrap();
        let mut b = Connection::new(b);
        let err = b.recv::<Envelope<OperatorRequest>>().await.unwrap_err();
        assert!(matches!(err, FramingError::Malformed(_)), "{err}");
    }

    #[tokio::test]
    async fn a_small_first_limit_refuses_a_big_first_frame_and_the_full_limit_keeps_buffered_frames()
     {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(1 << 16);
        a.write_all(format!("\"{}\"\n", "x".repeat(100)).as_bytes())
            .await
            .unwrap();
        let mut small = Connection::with_max_frame(b, 64);
        assert!(matches!(
            small.recv::<String>().await,
            Err(FramingError::TooLarge)
        ));

        let (mut a, b) = tokio::io::duplex(1 << 16);
        // Two frames arrive at once: the second is buffered when the limit is raised.
        a.write_all(b"\"hi\"\n\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"\n")
            .await
            .unwrap();
        let mut c = Connection::with_max_frame(b, 64);
        assert_eq!(c.recv::<String>().await.unwrap(), "hi");
        let mut c = c.with_full_limit();
        assert_eq!(c.recv::<String>().await.unwrap().len(), 73);
    }
}
