//! Feeds arbitrary bytes, in arbitrary reads, to what the agent does with an `ovsdb-server`'s
//! stream: the splitter that cuts it into JSON texts, then each text as a schema and as
//! `table-updates` / `table-updates2`. Any outcome but a panic, a hang or an abort is fine.
#![no_main]

use calipso_agent::ovsdb::db::{Schema, Tables};
use calipso_agent::ovsdb::split::Splitter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, as a socket's reads would cut the stream.
    let Some((&read, stream)) = data.split_first() else {
        return;
    };
    let read = usize::from(read % 64) + 1;
    let mut splitter = Splitter::new(1 << 16);
    let mut buffer: Vec<u8> = Vec::new();
    let mut tables = Tables::default();
    let mut schema = Schema::default();
    for chunk in stream.chunks(read) {
        buffer.extend_from_slice(chunk);
        loop {
            match splitter.next_end(&buffer) {
                Ok(Some(end)) => {
                    let message: Vec<u8> = buffer.drain(..end).collect();
                    splitter.consumed(end);
                    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&message) {
                        if let Ok(parsed) = Schema::parse(&value) {
                            schema = parsed;
                        }
                        let _ = tables.apply_update(&value);
                        let _ = tables.apply_update2(&schema, &value);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
