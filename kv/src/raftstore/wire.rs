//! The wire form of raft messages: conversions between the in-memory types ([`RaftEnvelope`],
//! [`raft::Message`] and the values it carries) and their protobuf mirrors in
//! `proto::raftpb`.
//!
//! Encoding cannot fail. Decoding reads what another process sent and so treats it as
//! untrusted: a message without a body, without a required sub-message (peers, epoch,
//! snapshot metadata) or with an enum value this version does not know is refused with a
//! description of what is wrong, never a panic. Proto3 cannot tell an absent scalar from a
//! zero, so scalars are taken as they come; only `optional` fields (the heartbeat contexts)
//! keep the difference between "absent" and "empty".
//!
//! The conversions take their input by value so that log entries and snapshot data, the bulk
//! of the traffic, are moved rather than copied.

use std::collections::BTreeSet;

use proto::raftpb as pb;
use proto::raftpb::message::Body;
use raft::{ConfState, Entry, EntryKind, Message, MessageBody, Snapshot, SnapshotMeta};

use super::transport::RaftEnvelope;

/// Encodes an envelope for the `Raft` stream (or the first chunk of a `Snapshot` stream).
pub fn envelope_to_pb(envelope: RaftEnvelope) -> pb::RaftMessage {
    pb::RaftMessage {
        region_id: envelope.region_id,
        from_peer: Some(envelope.from_peer),
        to_peer: Some(envelope.to_peer),
        region_epoch: Some(envelope.epoch),
        start_key: envelope.start_key,
        end_key: envelope.end_key,
        message: Some(message_to_pb(envelope.message)),
        is_tombstone: envelope.is_tombstone,
        hibernate: envelope.hibernate,
    }
}

/// Decodes an envelope received from another store.
pub fn envelope_from_pb(message: pb::RaftMessage) -> Result<RaftEnvelope, String> {
    let region_id = message.region_id;
    let context = |what: &str| format!("raft message of region {region_id}: missing {what}");
    Ok(RaftEnvelope {
        region_id,
        from_peer: message.from_peer.ok_or_else(|| context("from_peer"))?,
        to_peer: message.to_peer.ok_or_else(|| context("to_peer"))?,
        epoch: message
            .region_epoch
            .ok_or_else(|| context("region_epoch"))?,
        start_key: message.start_key,
        end_key: message.end_key,
        message: message_from_pb(message.message.ok_or_else(|| context("message"))?)
            .map_err(|e| format!("raft message of region {region_id}: {e}"))?,
        is_tombstone: message.is_tombstone,
        hibernate: message.hibernate,
    })
}

pub fn message_to_pb(message: Message) -> pb::Message {
    let body = match message.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => Body::PreVote(pb::PreVote {
            last_index,
            last_term,
        }),
        MessageBody::PreVoteResponse { reject } => {
            Body::PreVoteResponse(pb::VoteResponse { reject })
        }
        MessageBody::Vote {
            last_index,
            last_term,
            leader_transfer,
        } => Body::Vote(pb::Vote {
            last_index,
            last_term,
            leader_transfer,
        }),
        MessageBody::VoteResponse { reject } => Body::VoteResponse(pb::VoteResponse { reject }),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => Body::Append(pb::Append {
            prev_index,
            prev_term,
            entries: entries.into_iter().map(entry_to_pb).collect(),
            commit,
        }),
        MessageBody::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => Body::AppendResponse(pb::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        }),
        MessageBody::Heartbeat { commit, context } => {
            Body::Heartbeat(pb::Heartbeat { commit, context })
        }
        MessageBody::HeartbeatResponse { context } => {
            Body::HeartbeatResponse(pb::HeartbeatResponse { context })
        }
        MessageBody::Snapshot { snapshot } => Body::Snapshot(snapshot_to_pb(snapshot)),
        MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
        MessageBody::Propose { data } => Body::Propose(pb::Propose { data }),
        MessageBody::TransferLeader { target } => {
            Body::TransferLeader(pb::TransferLeader { target })
        }
        MessageBody::ReadIndex { context } => Body::ReadIndex(pb::ReadIndex { context }),
        MessageBody::ReadIndexResponse { index, context } => {
            Body::ReadIndexResponse(pb::ReadIndexResponse { index, context })
        }
    };
    pb::Message {
        from: message.from,
        to: message.to,
        term: message.term,
        body: Some(body),
    }
}

pub fn message_from_pb(message: pb::Message) -> Result<Message, String> {
    let body = match message.body.ok_or("message without a body")? {
        Body::PreVote(m) => MessageBody::PreVote {
            last_index: m.last_index,
            last_term: m.last_term,
        },
        Body::PreVoteResponse(m) => MessageBody::PreVoteResponse { reject: m.reject },
        Body::Vote(m) => MessageBody::Vote {
            last_index: m.last_index,
            last_term: m.last_term,
            leader_transfer: m.leader_transfer,
        },
        Body::VoteResponse(m) => MessageBody::VoteResponse { reject: m.reject },
        Body::Append(m) => MessageBody::Append {
            prev_index: m.prev_index,
            prev_term: m.prev_term,
            entries: m
                .entries
                .into_iter()
                .map(entry_from_pb)
                .collect::<Result<_, _>>()?,
            commit: m.commit,
        },
        Body::AppendResponse(m) => MessageBody::AppendResponse {
            reject: m.reject,
            index: m.index,
            hint_index: m.hint_index,
            hint_term: m.hint_term,
        },
        Body::Heartbeat(m) => MessageBody::Heartbeat {
            commit: m.commit,
            context: m.context,
        },
        Body::HeartbeatResponse(m) => MessageBody::HeartbeatResponse { context: m.context },
        Body::Snapshot(m) => MessageBody::Snapshot {
            snapshot: snapshot_from_pb(m)?,
        },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        Body::Propose(m) => MessageBody::Propose { data: m.data },
        Body::TransferLeader(m) => MessageBody::TransferLeader { target: m.target },
        Body::ReadIndex(m) => MessageBody::ReadIndex { context: m.context },
        Body::ReadIndexResponse(m) => MessageBody::ReadIndexResponse {
            index: m.index,
            context: m.context,
        },
    };
    Ok(Message {
        from: message.from,
        to: message.to,
        term: message.term,
        body,
    })
}

pub fn entry_to_pb(entry: Entry) -> pb::Entry {
    let kind = match entry.kind {
        EntryKind::Normal => pb::EntryKind::Normal,
        EntryKind::ConfChange => pb::EntryKind::ConfChange,
    };
    pb::Entry {
        term: entry.term,
        index: entry.index,
        kind: kind.into(),
        data: entry.data,
    }
}

pub fn entry_from_pb(entry: pb::Entry) -> Result<Entry, String> {
    let kind = match pb::EntryKind::try_from(entry.kind) {
        Ok(pb::EntryKind::Normal) => EntryKind::Normal,
        Ok(pb::EntryKind::ConfChange) => EntryKind::ConfChange,
        Err(_) => {
            return Err(format!(
                "entry {} has unknown kind {}",
                entry.index, entry.kind
            ));
        }
    };
    Ok(Entry {
        term: entry.term,
        index: entry.index,
        kind,
        data: entry.data,
    })
}

pub fn conf_state_to_pb(conf: ConfState) -> pb::ConfState {
    pb::ConfState {
        voters: conf.voters.into_iter().collect(),
        learners: conf.learners.into_iter().collect(),
    }
}

pub fn conf_state_from_pb(conf: pb::ConfState) -> ConfState {
    ConfState {
        voters: conf.voters.into_iter().collect::<BTreeSet<_>>(),
        learners: conf.learners.into_iter().collect::<BTreeSet<_>>(),
    }
}

pub fn snapshot_meta_to_pb(meta: SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        index: meta.index,
        term: meta.term,
        conf_state: Some(conf_state_to_pb(meta.conf_state)),
    }
}

pub fn snapshot_meta_from_pb(meta: pb::SnapshotMeta) -> Result<SnapshotMeta, String> {
    let conf_state = meta
        .conf_state
        .ok_or_else(|| format!("snapshot at index {} without conf_state", meta.index))?;
    Ok(SnapshotMeta {
        index: meta.index,
        term: meta.term,
        conf_state: conf_state_from_pb(conf_state),
    })
}

pub fn snapshot_to_pb(snapshot: Snapshot) -> pb::Snapshot {
    pb::Snapshot {
        meta: Some(snapshot_meta_to_pb(snapshot.meta)),
        data: snapshot.data,
    }
}

pub fn snapshot_from_pb(snapshot: pb::Snapshot) -> Result<Snapshot, String> {
    Ok(Snapshot {
        meta: snapshot_meta_from_pb(snapshot.meta.ok_or("snapshot without meta")?)?,
        data: snapshot.data,
    })
}

#[cfg(test)]
mod tests {
    use proto::metapb::{Peer as PeerMeta, RegionEpoch};

    use super::*;

    fn envelope(body: MessageBody) -> RaftEnvelope {
        RaftEnvelope {
            region_id: 7,
            from_peer: PeerMeta {
                id: 71,
                store_id: 1,
                learner: false,
            },
            to_peer: PeerMeta {
                id: 72,
                store_id: 2,
                learner: true,
            },
            epoch: RegionEpoch {
                conf_ver: 3,
                version: 4,
            },
            start_key: b"a".to_vec(),
            end_key: vec![],
            message: Message {
                from: 71,
                to: 72,
                term: 5,
                body,
            },
            is_tombstone: true,
            hibernate: true,
        }
    }

    fn every_body() -> Vec<MessageBody> {
        vec![
            MessageBody::PreVote {
                last_index: 10,
                last_term: 2,
            },
            MessageBody::PreVoteResponse { reject: true },
            MessageBody::Vote {
                last_index: 11,
                last_term: 3,
                leader_transfer: true,
            },
            MessageBody::VoteResponse { reject: false },
            MessageBody::Append {
                prev_index: 9,
                prev_term: 2,
                entries: vec![
                    Entry::normal(3, 10, b"put".to_vec()),
                    Entry::normal(3, 11, vec![]),
                    Entry {
                        term: 3,
                        index: 12,
                        kind: EntryKind::ConfChange,
                        data: raft::ConfChange::AddLearner(9).encode(),
                    },
                ],
                commit: 10,
            },
            MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![],
                commit: 0,
            },
            MessageBody::AppendResponse {
                reject: true,
                index: 12,
                hint_index: 8,
                hint_term: 1,
            },
            MessageBody::Heartbeat {
                commit: 10,
                context: None,
            },
            MessageBody::Heartbeat {
                commit: 10,
                context: Some(vec![]),
            },
            MessageBody::Heartbeat {
                commit: 10,
                context: Some(b"ctx".to_vec()),
            },
            MessageBody::HeartbeatResponse { context: None },
            MessageBody::HeartbeatResponse {
                context: Some(vec![]),
            },
            MessageBody::HeartbeatResponse {
                context: Some(b"ctx".to_vec()),
            },
            MessageBody::Snapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 100,
                        term: 4,
                        conf_state: ConfState {
                            voters: [1, 2, 3].into(),
                            learners: [4].into(),
                        },
                    },
                    data: vec![1, 2, 3, 0, 255],
                },
            },
            MessageBody::Snapshot {
                snapshot: Snapshot::default(),
            },
            MessageBody::TimeoutNow,
            MessageBody::Propose {
                data: b"proposal".to_vec(),
            },
            MessageBody::TransferLeader { target: 3 },
            MessageBody::ReadIndex {
                context: b"read".to_vec(),
            },
            MessageBody::ReadIndexResponse {
                index: 42,
                context: b"read".to_vec(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let bodies = every_body();
        let mut names: Vec<_> = bodies.iter().map(MessageBody::name).collect();
        names.dedup();
        assert_eq!(names.len(), 14, "every MessageBody variant is covered");
        for body in bodies {
            let original = envelope(body);
            let decoded = envelope_from_pb(envelope_to_pb(original.clone()));
            assert_eq!(decoded.as_ref(), Ok(&original));
        }
    }

    #[test]
    fn heartbeat_context_keeps_absent_apart_from_empty() {
        let encode = |context| {
            message_to_pb(Message {
                from: 1,
                to: 2,
                term: 1,
                body: MessageBody::Heartbeat { commit: 1, context },
            })
        };
        let none = encode(None);
        let empty = encode(Some(vec![]));
        assert_ne!(none, empty);
        assert!(matches!(
            message_from_pb(empty).map(|m| m.body),
            Ok(MessageBody::Heartbeat {
                context: Some(c),
                ..
            }) if c.is_empty()
        ));
        assert!(matches!(
            message_from_pb(none).map(|m| m.body),
            Ok(MessageBody::Heartbeat { context: None, .. })
        ));
    }

    #[test]
    fn malformed_input_is_rejected() {
        let good = envelope_to_pb(envelope(MessageBody::TimeoutNow));
        let mut cases: Vec<(&str, pb::RaftMessage)> = Vec::new();

        let mut m = good.clone();
        m.from_peer = None;
        cases.push(("from_peer", m));
        let mut m = good.clone();
        m.to_peer = None;
        cases.push(("to_peer", m));
        let mut m = good.clone();
        m.region_epoch = None;
        cases.push(("region_epoch", m));
        let mut m = good.clone();
        m.message = None;
        cases.push(("missing message", m));
        let mut m = good.clone();
        if let Some(message) = m.message.as_mut() {
            message.body = None;
        }
        cases.push(("without a body", m));

        let append = |kind: i32| {
            let mut m = good.clone();
            m.message = Some(pb::Message {
                from: 1,
                to: 2,
                term: 3,
                body: Some(Body::Append(pb::Append {
                    prev_index: 0,
                    prev_term: 0,
                    entries: vec![pb::Entry {
                        term: 1,
                        index: 1,
                        kind,
                        data: vec![],
                    }],
                    commit: 0,
                })),
            });
            m
        };
        assert!(envelope_from_pb(append(pb::EntryKind::ConfChange as i32)).is_ok());
        cases.push(("unknown kind", append(7)));
        cases.push(("unknown kind", append(-1)));

        let snapshot = |snapshot: pb::Snapshot| {
            let mut m = good.clone();
            m.message = Some(pb::Message {
                from: 1,
                to: 2,
                term: 3,
                body: Some(Body::Snapshot(snapshot)),
            });
            m
        };
        cases.push((
            "without meta",
            snapshot(pb::Snapshot {
                meta: None,
                data: vec![1],
            }),
        ));
        cases.push((
            "without conf_state",
            snapshot(pb::Snapshot {
                meta: Some(pb::SnapshotMeta {
                    index: 5,
                    term: 1,
                    conf_state: None,
                }),
                data: vec![1],
            }),
        ));

        for (expected, message) in cases {
            match envelope_from_pb(message) {
                Err(e) => assert!(e.contains(expected), "{e:?} should mention {expected:?}"),
                Ok(e) => panic!("accepted malformed message ({expected}): {e:?}"),
            }
        }
        assert!(envelope_from_pb(good).is_ok());
    }
}
