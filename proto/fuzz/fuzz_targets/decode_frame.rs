//! Feeds arbitrary bytes through the frame reader and the message decoder, as the aggregator
//! does with what an agent sends: any outcome but a panic, a hang or an abort is fine.
#![no_main]

use calipso_proto::codec;
use calipso_proto::framing::FrameReader;
use calipso_proto::wire::{AgentMessage, AggregatorMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<AgentMessage>(data);
    let _ = codec::decode::<AggregatorMessage>(data);
    let _ = codec::peek_hello_version(data);

    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let mut reader = FrameReader::new(data, 4096);
        while let Ok(Some(_)) = reader.recv::<AgentMessage>().await {}
    });
});
