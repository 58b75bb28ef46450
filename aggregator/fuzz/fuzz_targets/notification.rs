//! Feeds arbitrary bytes to the parser of OpenStack notifications, as the adapter does with
//! every message the cloud's bus delivers (oslo envelope v1 or v2, then the payload). Any
//! outcome but a panic, a hang or an abort is fine.
#![no_main]

use calipso_aggregator::openstack::notifications::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
});
