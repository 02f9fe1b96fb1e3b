//! The group file: who the members of a broker group are and where each
//! listens. TOML, one `[[member]]` table per member:
//!
//! ```toml
//! [[member]]
//! id = 1                               # the Raft id and the member's name (--node-id)
//! intake = "tcp://10.0.0.1:5570"       # producers
//! fanout = "tcp://10.0.0.1:5571"       # broker heartbeats and announcements
//! control = "tcp://10.0.0.1:5572"      # workers
//! peer = "tcp://10.0.0.1:5573"         # the other members (Raft traffic)
//! admin = "10.0.0.1:8080"              # HOST:PORT, as --admin takes it
//! ```
//!
//! A group runs with 3 or 5 members (a majority survives the loss of 1 or
//! 2); a group of 1 is accepted for tests and development — it replicates
//! nothing and survives nothing, but runs the same code. While a member is
//! added or replaced the file lists one more (4 or 6: see `membership`);
//! the voters are then raft's configuration, not the file. More than
//! [`crate::membership::MEMBERS_MAX`] are refused.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use orderly_common::endpoint::{Endpoint, EndpointError};
use serde::Deserialize;

/// The group sizes a group runs with (see the module docs).
pub const GROUP_SIZES: &[usize] = &[1, 3, 5];
/// The largest group: Raft's every commit waits for a majority, so more
/// members only slow it down; 5 survives two losses.
pub const GROUP_MEMBERS_MAX: usize = 5;
const _: () = assert!(GROUP_SIZES[GROUP_SIZES.len() - 1] == GROUP_MEMBERS_MAX);
/// A group file lists at most this many: a group of 5 and a member being
/// added to it.
pub const GROUP_FILE_MEMBERS_MAX: usize = crate::membership::MEMBERS_MAX;
const _: () = assert!(GROUP_FILE_MEMBERS_MAX == GROUP_MEMBERS_MAX + 1);

/// What a group file names `text` given to [`Group::parse`] in errors.
const PARSED_TEXT_NAME: &str = "(group text)";

/// One member of the group, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The Raft id (at least 1) and the member's name.
    pub id: u64,
    pub intake: Endpoint,
    pub fanout: Endpoint,
    pub control: Endpoint,
    pub peer: Endpoint,
    /// `HOST:PORT`, as `--admin` takes it.
    pub admin: String,
    /// The member's CURVE public key (40 Z85 characters, or a file holding
    /// them), for clients with CURVE: each member has its own key (the one
    /// its `broker` line in authorized_keys holds), so a client needs
    /// every member's. `None`: clients use their `--broker-public-key`.
    pub public_key: Option<String>,
}

/// Every member, in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    members: Vec<Member>,
}

/// A group file that cannot be used: which file, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("group file {}: {kind}", file.display())]
pub struct GroupError {
    pub file: PathBuf,
    pub kind: GroupErrorKind,
}

/// What is wrong with a group file; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum GroupErrorKind {
    #[error("cannot read it: {0} (check the path given to --group)")]
    Read(#[source] std::io::Error),
    #[error("is not a valid group file: {0}(each member is a [[member]] table with id, intake, fanout, control, peer and admin)")]
    Syntax(String),
    #[error("has {count} members; a group has 3 or 5 (1 for tests), one more while a member is added: add or remove [[member]] tables")]
    Size { count: usize },
    #[error("member #{position} has id 0; ids are whole numbers from 1 up")]
    ZeroId { position: usize },
    #[error("members #{first} and #{second} both have id {id}; give each member its own id")]
    DuplicateId { id: u64, first: usize, second: usize },
    #[error("member {id}, key `{key}`: {source}")]
    Endpoint {
        id: u64,
        key: &'static str,
        #[source]
        source: EndpointError,
    },
    #[error("member {id}, key `admin`: {value:?} is not HOST:PORT (write it like 127.0.0.1:8080)")]
    Admin { id: u64, value: String },
    #[error("member {id}, key `{key}`: {value:?} is also member {other_id}'s `{other_key}`; every endpoint must be distinct")]
    DuplicateEndpoint { id: u64, key: &'static str, value: String, other_id: u64, other_key: &'static str },
}

/// A member as written in the file, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: u64,
    intake: String,
    fanout: String,
    control: String,
    peer: String,
    admin: String,
    #[serde(default)]
    public_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    member: Vec<RawMember>,
}

impl Group {
    /// Reads and validates the group file at `path`.
    pub fn load(path: &Path) -> Result<Group, GroupError> {
        let error = |kind| GroupError { file: path.to_path_buf(), kind };
        let text = std::fs::read_to_string(path).map_err(|source| error(GroupErrorKind::Read(source)))?;
        Group::parse_kind(&text).map_err(error)
    }

    /// Validates a group file's text (errors name it `(group text)`).
    pub fn parse(text: &str) -> Result<Group, GroupError> {
        Group::parse_kind(text).map_err(|kind| GroupError { file: PathBuf::from(PARSED_TEXT_NAME), kind })
    }

    fn parse_kind(text: &str) -> Result<Group, GroupErrorKind> {
        let raw: RawGroup = toml::from_str(text).map_err(|error| GroupErrorKind::Syntax(error.to_string()))?;
        if raw.member.is_empty() || raw.member.len() > GROUP_FILE_MEMBERS_MAX {
            return Err(GroupErrorKind::Size { count: raw.member.len() });
        }
        let mut members = Vec::with_capacity(raw.member.len());
        let mut positions: BTreeMap<u64, usize> = BTreeMap::new();
        for (index, raw_member) in raw.member.into_iter().enumerate() {
            let position = index + 1;
            if raw_member.id == 0 {
                return Err(GroupErrorKind::ZeroId { position });
            }
            if let Some(&first) = positions.get(&raw_member.id) {
                return Err(GroupErrorKind::DuplicateId { id: raw_member.id, first, second: position });
            }
            positions.insert(raw_member.id, position);
            members.push(Member::validate(raw_member)?);
        }
        check_distinct(&members)?;
        Ok(Group { members })
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }

    /// Every member's id, in the order of the file: the Raft voters.
    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|member| member.id).collect()
    }

    /// The members as producers and workers see them: the endpoints
    /// clients use (peer and admin are the members' own business).
    pub fn client_members(&self) -> Result<orderly_common::members::Members, orderly_common::members::MembersError> {
        let members = self.members.iter().map(|member| orderly_common::members::Member {
            id: member.id,
            intake: member.intake.clone(),
            fanout: member.fanout.clone(),
            control: member.control.clone(),
            public_key: member.public_key.clone(),
        });
        orderly_common::members::Members::new(members.collect())
    }
}

impl Member {
    /// A member carried by the log (see `membership`), checked as if read
    /// from a group file.
    pub(crate) fn from_record(record: &crate::membership::MemberRecord) -> Result<Member, GroupErrorKind> {
        Member::validate(RawMember {
            id: record.id,
            intake: record.intake.clone(),
            fanout: record.fanout.clone(),
            control: record.control.clone(),
            peer: record.peer.clone(),
            admin: record.admin.clone(),
            public_key: record.public_key.clone(),
        })
    }

    fn validate(raw: RawMember) -> Result<Member, GroupErrorKind> {
        let id = raw.id;
        let endpoint = |key: &'static str, text: &str| {
            text.parse::<Endpoint>().map_err(|source| GroupErrorKind::Endpoint { id, key, source })
        };
        if !is_host_port(&raw.admin) {
            return Err(GroupErrorKind::Admin { id, value: raw.admin });
        }
        Ok(Member {
            id,
            intake: endpoint("intake", &raw.intake)?,
            fanout: endpoint("fanout", &raw.fanout)?,
            control: endpoint("control", &raw.control)?,
            peer: endpoint("peer", &raw.peer)?,
            admin: raw.admin,
            public_key: raw.public_key,
        })
    }

    /// Every address of the member with its key.
    fn addresses(&self) -> [(&'static str, &str); 5] {
        [
            ("intake", self.intake.as_str()),
            ("fanout", self.fanout.as_str()),
            ("control", self.control.as_str()),
            ("peer", self.peer.as_str()),
            ("admin", self.admin.as_str()),
        ]
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "member {} (peer {})", self.id, self.peer)
    }
}

/// `HOST:PORT` with a non-empty host and a port from 1 to 65535.
fn is_host_port(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else { return false };
    !host.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// No two addresses of the group (any member, any key) are the same: two
/// members cannot bind one endpoint, and one member's sockets must differ.
fn check_distinct(members: &[Member]) -> Result<(), GroupErrorKind> {
    let mut seen: BTreeMap<&str, (u64, &'static str)> = BTreeMap::new();
    for member in members {
        for (key, value) in member.addresses() {
            if let Some(&(other_id, other_key)) = seen.get(value) {
                let value = value.to_string();
                return Err(GroupErrorKind::DuplicateEndpoint { id: member.id, key, value, other_id, other_key });
            }
            seen.insert(value, (member.id, key));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> String {
        let port = 5000 + id * 10;
        format!(
            "[[member]]\nid = {id}\nintake = \"tcp://127.0.0.1:{}\"\nfanout = \"tcp://127.0.0.1:{}\"\n\
             control = \"tcp://127.0.0.1:{}\"\npeer = \"tcp://127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
            port,
            port + 1,
            port + 2,
            port + 3,
            port + 4
        )
    }

    fn group(ids: &[u64]) -> String {
        ids.iter().map(|&id| member(id)).collect::<Vec<_>>().join("\n")
    }

    fn kind(text: &str) -> GroupErrorKind {
        Group::parse(text).expect_err("refused").kind
    }

    #[test]
    fn three_and_five_members_parse_and_one_is_allowed_for_tests() {
        let three = Group::parse(&group(&[1, 2, 3])).expect("valid");
        assert_eq!(three.ids(), vec![1, 2, 3]);
        assert_eq!(three.member(2).expect("member 2").peer.as_str(), "tcp://127.0.0.1:5023");
        assert_eq!(three.member(2).expect("member 2").admin, "127.0.0.1:5024");
        assert_eq!(Group::parse(&group(&[7, 8, 9, 10, 11])).expect("valid").ids(), vec![7, 8, 9, 10, 11]);
        assert_eq!(Group::parse(&group(&[4])).expect("valid").ids(), vec![4]);
    }

    #[test]
    fn one_more_while_adding_is_accepted_but_empty_and_more_than_six_are_refused() {
        assert_eq!(Group::parse(&group(&[1, 2, 3, 4])).expect("adding a 4th").ids(), vec![1, 2, 3, 4]);
        assert_eq!(Group::parse(&group(&[1, 2, 3, 4, 5, 6])).expect("adding a 6th").ids().len(), 6);
        assert!(matches!(kind(&group(&[1, 2, 3, 4, 5, 6, 7])), GroupErrorKind::Size { count: 7 }));
        assert!(matches!(kind("member = []"), GroupErrorKind::Size { count: 0 }));
    }

    #[test]
    fn zero_and_duplicate_ids_are_refused_with_positions() {
        assert!(matches!(kind(&group(&[1, 0, 3])), GroupErrorKind::ZeroId { position: 2 }));
        let text = group(&[1, 2, 3]).replace("id = 3", "id = 1").replace("50", "60");
        // The third member now has id 1 (endpoints moved so only the id clashes).
        let text = format!("{}\n{}", group(&[1, 2]), text.split("\n\n").nth(2).expect("third member"));
        assert!(matches!(kind(&text), GroupErrorKind::DuplicateId { id: 1, first: 1, second: 3 }), "{text}");
    }

    #[test]
    fn a_bad_endpoint_names_the_member_and_the_key() {
        let text = group(&[1, 2, 3]).replace("tcp://127.0.0.1:5032", "udp://127.0.0.1:5032");
        let error = Group::parse(&text).expect_err("refused");
        assert!(matches!(error.kind, GroupErrorKind::Endpoint { id: 3, key: "control", .. }));
        let message = error.to_string();
        assert!(message.contains("(group text)") && message.contains("member 3, key `control`"), "{message}");
    }

    #[test]
    fn a_bad_admin_address_is_refused() {
        for bad in ["127.0.0.1", ":8080", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:+80"] {
            let text = group(&[1, 2, 3]).replace("127.0.0.1:5024\"", &format!("{bad}\""));
            assert!(matches!(kind(&text), GroupErrorKind::Admin { id: 2, .. }), "{bad}");
        }
    }

    #[test]
    fn a_shared_endpoint_is_refused_across_members_and_keys() {
        // Member 2's peer is member 1's intake.
        let text = group(&[1, 2, 3]).replace("tcp://127.0.0.1:5023", "tcp://127.0.0.1:5010");
        let found = kind(&text);
        assert!(
            matches!(
                &found,
                GroupErrorKind::DuplicateEndpoint { id: 2, key: "peer", other_id: 1, other_key: "intake", .. }
            ),
            "{found}"
        );
    }

    #[test]
    fn syntax_unknown_and_missing_keys_are_refused_naming_the_key() {
        let unknown = format!("{}extra = 1\n", group(&[1]));
        assert!(matches!(&kind(&unknown), GroupErrorKind::Syntax(m) if m.contains("extra")));
        let missing = group(&[1]).replace("admin = \"127.0.0.1:5014\"\n", "");
        assert!(matches!(&kind(&missing), GroupErrorKind::Syntax(m) if m.contains("admin")));
        assert!(matches!(kind("[[member]\n"), GroupErrorKind::Syntax(_)));
        assert!(matches!(kind(&group(&[1]).replace("id = 1", "id = -1")), GroupErrorKind::Syntax(_)));
    }

    #[test]
    fn load_names_the_file_and_reads_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("group.toml");
        let error = Group::load(&path).expect_err("missing");
        assert!(matches!(error.kind, GroupErrorKind::Read(_)));
        assert!(error.to_string().contains("group.toml"), "{error}");
        std::fs::write(&path, group(&[1, 2, 3])).expect("write");
        assert_eq!(Group::load(&path).expect("valid").ids(), vec![1, 2, 3]);
        std::fs::write(&path, "member = []").expect("write");
        assert!(Group::load(&path).expect_err("size").to_string().contains("group.toml: has 0 members"));
    }
}
