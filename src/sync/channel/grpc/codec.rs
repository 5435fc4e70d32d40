//! gRPC messages as raw bytes: a session frame is already versioned and
//! checksummed, so no protobuf (and no `protoc`) is involved.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Passes frames through unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = FrameCodec;
    type Decoder = FrameCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for FrameCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut frame = vec![0; src.remaining()];
        src.copy_to_slice(&mut frame);
        Ok(Some(frame))
    }
}
