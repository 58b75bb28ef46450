//! Property tests: the decoder never panics on arbitrary bytes, and every message round-trips.

use std::collections::BTreeMap;

use calipso_proto::codec;
use calipso_proto::wire::{AgentMessage, AggregatorMessage, Delta, Hello};
use calipso_proto::{AttrValue, IpPrefix, MacAddress, Object, ObjectId, ObjectType, Timestamp};
use proptest::prelude::*;

fn attr_value() -> impl Strategy<Value = AttrValue> {
    let leaf = prop_oneof![
        Just(AttrValue::Null),
        any::<bool>().prop_map(AttrValue::Bool),
        any::<i64>().prop_map(AttrValue::Int),
        (-1e9f64..1e9).prop_map(AttrValue::Float),
        // Both sides of the 24 bytes a string keeps inline.
        "[a-z0-9 ]{0,40}".prop_map(AttrValue::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(AttrValue::List),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| AttrValue::Map(m.into())),
        ]
    })
}

fn object() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(ObjectType::ALL.to_vec()),
        "[a-z0-9-]{1,40}",
        prop::option::of(any::<[u8; 6]>()),
        prop::collection::vec((any::<[u8; 4]>(), 0u8..=32), 0..3),
        prop::collection::btree_map("[a-z_]{1,8}", attr_value(), 0..4),
    )
        .prop_map(|(ty, name, mac, addrs, extra)| {
            let mut obj = Object::new(ObjectId::host_local(ty, "h1", &name), ty, name, "env");
            obj.attributes.mac_address = mac.map(MacAddress);
            obj.attributes.addresses = addrs
                .into_iter()
                .filter_map(|(a, len)| IpPrefix::new(a.into(), len))
                .collect();
            obj.attributes.extra = extra.into();
            obj
        })
}

fn agent_message() -> impl Strategy<Value = AgentMessage> {
    prop_oneof![
        (any::<u16>(), any::<u64>(), any::<u64>()).prop_map(
            |(v, epoch, last)| AgentMessage::Hello(Hello {
                protocol_version: v,
                agent_version: "0.1.0".into(),
                host: "h1".into(),
                environment: "env".into(),
                epoch,
                last_acked_seq: last,
            })
        ),
        (
            any::<u64>(),
            prop::collection::vec(object(), 0..5),
            prop::collection::vec("[a-z:]{1,10}", 0..3)
        )
            .prop_map(|(seq, upserts, removals)| AgentMessage::Delta(Delta {
                epoch: 1,
                seq,
                upserts,
                removals: removals.into_iter().map(ObjectId::from_raw).collect(),
                observed_at: Timestamp::from_unix_micros(1_700_000_000_000_000),
            })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode::<AgentMessage>(&bytes);
        let _ = codec::decode::<AggregatorMessage>(&bytes);
        let _ = codec::peek_hello_version(&bytes);
    }

    #[test]
    fn messages_round_trip(message in agent_message()) {
        let bytes = codec::encode(&message).expect("encodes");
        prop_assert_eq!(codec::decode::<AgentMessage>(&bytes).expect("decodes"), message);
    }

    #[test]
    fn corrupted_messages_never_panic(message in agent_message(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = codec::encode(&message).expect("encodes");
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = codec::decode::<AgentMessage>(&bytes);
    }
}

#[test]
fn nested_attribute_bomb_is_refused() {
    // 10 000 nested lists in 20 000 bytes: must be an error, not a stack overflow.
    let mut value = AttrValue::Null;
    for _ in 0..40 {
        value = AttrValue::List(vec![value]);
    }
    let mut extra = BTreeMap::new();
    extra.insert("x".to_owned(), value);
    let mut obj = Object::new(ObjectId::host("h1"), ObjectType::Host, "h1", "env");
    obj.attributes.extra = extra.into();
    let bytes = codec::encode(&AgentMessage::Delta(Delta {
        epoch: 1,
        seq: 1,
        upserts: vec![obj],
        removals: vec![],
        observed_at: Timestamp::default(),
    }))
    .expect("encodes");
    let err = codec::decode::<AgentMessage>(&bytes)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("nested deeper than"), "{err}");

    // The same shape built by hand at a depth no encoder would produce.
    let prefix_len = bytes.len();
    assert!(prefix_len > 0);
    let mut bomb = Vec::new();
    for _ in 0..10_000 {
        bomb.extend_from_slice(&[5, 1]); // AttrValue::List, one element
    }
    assert!(codec::decode::<AttrValue>(&bomb).is_err());
}
