//! Raw gRPC: any request body to any method by path, any answer as bytes. The fuzzers
//! send bodies no generated client would build, and the security tests read the exact
//! bytes a server put on the wire (a re-encoded decoded message could hide a field).

use std::time::Duration;

use prost::bytes::{Buf as _, BufMut as _};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use super::services::Authed;

/// Ceiling for one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Raw protobuf bytes in and out, so any request can be sent and any answer read.
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Calls `/<service>/<method>` with `body`. A unary call returns its one answer; a
/// server stream returns what arrived within `listen` (a refused stream fails on its
/// first item).
pub async fn fetch(
    channel: Authed,
    service: &str,
    method: &str,
    body: Vec<u8>,
    streaming: bool,
    listen: Duration,
) -> Result<Vec<Vec<u8>>, Status> {
    let path = PathAndQuery::try_from(format!("/{service}/{method}")).expect("a valid path");
    let mut grpc = tonic::client::Grpc::new(channel);
    let attempt = async {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if streaming {
            let mut stream = grpc
                .server_streaming(tonic::Request::new(body), path, RawCodec)
                .await?
                .into_inner();
            let mut out = Vec::new();
            let until = tokio::time::Instant::now() + listen;
            loop {
                match tokio::time::timeout_at(until, stream.message()).await {
                    Ok(Ok(Some(item))) => out.push(item),
                    Ok(Ok(None)) | Err(_) => return Ok(out),
                    Ok(Err(status)) if out.is_empty() => return Err(status),
                    Ok(Err(_)) => return Ok(out),
                }
            }
        } else {
            grpc.unary(tonic::Request::new(body), path, RawCodec)
                .await
                .map(|r| vec![r.into_inner()])
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT + listen, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(
            "no answer within the test's ceiling",
        )),
    }
}
