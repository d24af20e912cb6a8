//! The process: args from the image's Entrypoint/Cmd and the config's command/args, env, working
//! directory, and the user (uid, gid, additional gids) resolved through the image's /etc/passwd
//! and /etc/group, as containerd's `WithProcessArgs`, `WithEnv`, `WithUser` and
//! `WithAdditionalGIDs` do.

use cri_api::v1 as cri;

use super::SpecError;

/// The PATH every container gets unless the image or the config sets one (containerd's
/// `WithDefaultPathEnv`).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes' rules: `command` replaces the image's Entrypoint and drops its Cmd; `args`
/// replaces Cmd. An Entrypoint of `[""]` means none (docker's `--entrypoint ""`).
pub fn args(
    command: &[String],
    config_args: &[String],
    entrypoint: &[String],
    cmd: &[String],
) -> Result<Vec<String>, SpecError> {
    let mut command = command.to_vec();
    let mut args = config_args.to_vec();
    if command.is_empty() {
        if args.is_empty() {
            args = cmd.to_vec();
        }
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint.to_vec();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::Invalid {
            field: "command",
            reason: "no command specified: neither the config's command/args nor the image's \
                     Entrypoint/Cmd"
                .into(),
        });
    }
    Ok(command)
}

/// Merges `KEY=VALUE` lists in order; a later key replaces an earlier one in place (containerd's
/// `replaceOrAppendEnvValues`). An entry without `=` is a key with no value.
pub fn merge_env(layers: &[&[String]]) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    for layer in layers {
        for entry in *layer {
            let key = entry.split('=').next().unwrap_or_default();
            match env
                .iter_mut()
                .find(|e| e.split('=').next().unwrap_or_default() == key)
            {
                Some(existing) => existing.clone_from(entry),
                None => env.push(entry.clone()),
            }
        }
    }
    env
}

/// The config's envs as `KEY=VALUE`. A value arrives as bytes; one that is not UTF-8 cannot be
/// carried by the OCI spec (JSON strings) and goes in lossily, each invalid byte a U+FFFD — what
/// containerd gives runc. [`env_bytes`] has the exact bytes for a runtime that takes them.
pub fn config_env(envs: &[cri::KeyValue]) -> Vec<String> {
    envs.iter()
        .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)))
        .collect()
}

/// The config's env values that are not UTF-8, by key (the last of a key wins, as in
/// [`merge_env`]): the value of berth's annotation [`berth_runtime::features::ANNOTATION_ENV_BYTES`],
/// a JSON object `{"KEY": "<base64 of the raw bytes>"}`; `None` when every value is UTF-8.
pub fn env_bytes(envs: &[cri::KeyValue]) -> Option<(String, Vec<String>)> {
    use base64::Engine;
    let mut raw = std::collections::BTreeMap::new();
    for kv in envs {
        if std::str::from_utf8(&kv.value).is_ok() {
            raw.remove(&kv.key);
        } else {
            raw.insert(
                kv.key.clone(),
                base64::engine::general_purpose::STANDARD.encode(&kv.value),
            );
        }
    }
    if raw.is_empty() {
        return None;
    }
    let keys = raw.keys().cloned().collect();
    Some((
        serde_json::to_string(&raw).expect("strings serialize"),
        keys,
    ))
}

/// The working directory: the config's, else the image's, else `/`.
pub fn cwd(config: &str, image: Option<&str>) -> String {
    [Some(config), image]
        .into_iter()
        .flatten()
        .find(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string()
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Primary gid, the user's /etc/group memberships and the configured supplemental groups,
    /// sorted and unique (containerd's `WithAdditionalGIDs` + `WithSupplementalGroups`).
    pub additional_gids: Vec<u32>,
}

/// Where the user comes from, in containerd's order: run_as_username, run_as_user (each with
/// run_as_group), else the image's User, else root.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserRequest<'a> {
    pub run_as_username: &'a str,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub image_user: Option<&'a str>,
    pub supplemental_groups: &'a [i64],
    /// SupplementalGroupsPolicy Strict: ignore /etc/group memberships.
    pub strict_groups: bool,
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// Resolves the user as containerd does (see [`UserRequest`]).
pub fn resolve_user(req: &UserRequest<'_>) -> Result<ResolvedUser, SpecError> {
    let passwd = parse_passwd(req.passwd.unwrap_or_default());
    let groups = parse_group(req.group.unwrap_or_default());
    let id = |field: &'static str, value: i64| {
        u32::try_from(value).map_err(|_| SpecError::Invalid {
            field,
            reason: format!("{value} is not a valid id"),
        })
    };

    // The user part (a name or a number) and the optional group part, with the field names
    // errors report.
    let (user_part, user_field, group_part, group_field): (String, &str, Option<String>, &str) =
        if !req.run_as_username.is_empty() {
            (
                req.run_as_username.to_string(),
                "security_context.run_as_username",
                req.run_as_group.map(|g| g.to_string()),
                "security_context.run_as_group",
            )
        } else if let Some(uid) = req.run_as_user {
            id("security_context.run_as_user", uid)?;
            (
                uid.to_string(),
                "security_context.run_as_user",
                req.run_as_group.map(|g| g.to_string()),
                "security_context.run_as_group",
            )
        } else if req.run_as_group.is_some() {
            return Err(SpecError::Invalid {
                field: "security_context.run_as_group",
                reason: "a group is set without a user (run_as_user or run_as_username)".into(),
            });
        } else {
            match req.image_user.filter(|u| !u.is_empty()) {
                Some(user) => {
                    let (u, g) = match user.split_once(':') {
                        Some((u, g)) => (u.to_string(), Some(g.to_string())),
                        None => (user.to_string(), None),
                    };
                    (u, "image config User", g, "image config User")
                }
                None => ("0".to_string(), "user", None, "group"),
            }
        };

    // User: a number need not exist in /etc/passwd (gid 0 then); a name must.
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .or(Some(Passwd {
                name: String::new(),
                uid,
                gid: 0,
            })),
        Err(_) => passwd.iter().find(|p| p.name == user_part).cloned(),
    };
    let Some(entry) = entry else {
        return Err(SpecError::UnknownName {
            field: user_field,
            name: user_part,
            file: "/etc/passwd",
        });
    };
    let gid = match group_part.filter(|g| !g.is_empty()) {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match groups.iter().find(|gr| gr.name == g) {
                Some(gr) => gr.gid,
                None => {
                    return Err(SpecError::UnknownName {
                        field: group_field,
                        name: g,
                        file: "/etc/group",
                    })
                }
            },
        },
    };

    let mut additional = vec![gid];
    if !req.strict_groups && !entry.name.is_empty() {
        additional.extend(
            groups
                .iter()
                .filter(|g| g.name != entry.name && g.members.contains(&entry.name))
                .map(|g| g.gid),
        );
    }
    for &g in req.supplemental_groups {
        additional.push(id("security_context.supplemental_groups", g)?);
    }
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser {
        uid: entry.uid,
        gid,
        additional_gids: additional,
    })
}

#[derive(Debug, Clone)]
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped (as libc does).
fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Passwd {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// `name:password:gid:member,member`.
fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Group {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entrypoint_cmd_matrix() {
        let ep = v(&["/ep"]);
        let cmd = v(&["cmd1", "cmd2"]);
        // Nothing in the config: Entrypoint + Cmd.
        assert_eq!(args(&[], &[], &ep, &cmd).unwrap(), ["/ep", "cmd1", "cmd2"]);
        // args only: Entrypoint + args (Cmd dropped).
        assert_eq!(args(&[], &v(&["a"]), &ep, &cmd).unwrap(), ["/ep", "a"]);
        // command only: command (Entrypoint and Cmd dropped).
        assert_eq!(args(&v(&["/c"]), &[], &ep, &cmd).unwrap(), ["/c"]);
        // both: command + args.
        assert_eq!(
            args(&v(&["/c"]), &v(&["a", "b"]), &ep, &cmd).unwrap(),
            ["/c", "a", "b"]
        );
        // No Entrypoint: Cmd alone, or args alone.
        assert_eq!(args(&[], &[], &[], &cmd).unwrap(), ["cmd1", "cmd2"]);
        assert_eq!(args(&[], &v(&["a"]), &[], &cmd).unwrap(), ["a"]);
        // Entrypoint [""] means none.
        assert_eq!(args(&[], &[], &v(&[""]), &cmd).unwrap(), ["cmd1", "cmd2"]);
        // Nothing anywhere: an error naming the field.
        let err = args(&[], &[], &[], &[]).unwrap_err().to_string();
        assert!(err.starts_with("command: no command specified"), "{err}");
    }

    #[test]
    fn env_later_wins_in_place() {
        let image = v(&["PATH=/bin", "A=1", "B=2"]);
        let config = v(&["B=3", "C=4", "A=5"]);
        assert_eq!(
            merge_env(&[&[DEFAULT_PATH_ENV.to_string()], &image, &config]),
            ["PATH=/bin", "A=5", "B=3", "C=4"]
        );
        assert_eq!(
            config_env(&[cri::KeyValue {
                key: "K".into(),
                value: "a=b".into()
            }]),
            ["K=a=b"]
        );
    }

    #[test]
    fn env_bytes_go_in_lossily_and_exactly_in_the_annotation() {
        let kv = |key: &str, value: &[u8]| cri::KeyValue {
            key: key.into(),
            value: value.to_vec(),
        };
        assert_eq!(
            config_env(&[kv("GREETING", "grüß".as_bytes()), kv("EMPTY", b"")]),
            ["GREETING=grüß", "EMPTY="]
        );
        assert_eq!(env_bytes(&[kv("GREETING", "grüß".as_bytes())]), None);
        let envs = [
            kv("OK", b"1"),
            kv("SECRET", b"\xff\xfeok\x80"),
            kv("LATER", b"\xff"),
            kv("LATER", b"fine"),
        ];
        assert_eq!(
            config_env(&envs),
            [
                "OK=1",
                "SECRET=\u{fffd}\u{fffd}ok\u{fffd}",
                "LATER=\u{fffd}",
                "LATER=fine"
            ]
        );
        // The later UTF-8 LATER wins: only SECRET's bytes.
        let (json, keys) = env_bytes(&envs).expect("a value is not UTF-8");
        assert_eq!(keys, ["SECRET"]);
        assert_eq!(json, r#"{"SECRET":"//5va4A="}"#);
        // What berth-runtime reads back.
        let merged = merge_env(&[&config_env(&envs)]);
        let parsed = berth_runtime::process::env_bytes::parse(&json, &merged).unwrap();
        assert_eq!(parsed["SECRET"], b"\xff\xfeok\x80");
    }

    #[test]
    fn working_dir_order() {
        assert_eq!(cwd("/cfg", Some("/img")), "/cfg");
        assert_eq!(cwd("", Some("/img")), "/img");
        assert_eq!(cwd("", Some("")), "/");
        assert_eq!(cwd("", None), "/");
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          daemon:x:1:1::/:/bin/false\n\
                          app:x:1000:1000:App:/home/app:/bin/sh\n\
                          nobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
                         wheel:x:10:root,app\n\
                         app:x:1000:app\n\
                         audio:x:29:app\n\
                         staff:x:50:\n\
                         nogroup:x:65534:\n";

    fn req<'a>() -> UserRequest<'a> {
        UserRequest {
            passwd: Some(PASSWD),
            group: Some(GROUP),
            ..Default::default()
        }
    }

    #[test]
    fn user_default_is_root_with_its_groups() {
        let u = resolve_user(&req()).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, [0, 10]);
        // No passwd at all: plain root.
        let u = resolve_user(&UserRequest::default()).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (0, 0, vec![0]));
    }

    #[test]
    fn image_user_forms() {
        let image = |user: &'static str| UserRequest {
            image_user: Some(user),
            ..req()
        };
        let u = resolve_user(&image("app")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, [10, 29, 1000]);
        let u = resolve_user(&image("1000")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        let u = resolve_user(&image("4242")).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (4242, 0, vec![0]));
        let u = resolve_user(&image("1000:50")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        let u = resolve_user(&image("app:staff")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        let u = resolve_user(&image("4242:4343")).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        let err = resolve_user(&image("ghost")).unwrap_err().to_string();
        assert_eq!(
            err,
            "image config User \"ghost\": not found in the image's /etc/passwd"
        );
        let err = resolve_user(&image("app:ghosts")).unwrap_err().to_string();
        assert_eq!(
            err,
            "image config User \"ghosts\": not found in the image's /etc/group"
        );
    }

    #[test]
    fn run_as_overrides_image() {
        let u = resolve_user(&UserRequest {
            run_as_user: Some(1),
            image_user: Some("app"),
            ..req()
        })
        .unwrap();
        assert_eq!((u.uid, u.gid), (1, 1));
        let u = resolve_user(&UserRequest {
            run_as_user: Some(1000),
            run_as_group: Some(7),
            supplemental_groups: &[300, 29],
            ..req()
        })
        .unwrap();
        assert_eq!((u.uid, u.gid), (1000, 7));
        assert_eq!(u.additional_gids, [7, 10, 29, 300]);
        let u = resolve_user(&UserRequest {
            run_as_username: "nobody",
            run_as_user: Some(1000),
            ..req()
        })
        .unwrap();
        assert_eq!((u.uid, u.gid), (65534, 65534));
        let err = resolve_user(&UserRequest {
            run_as_username: "nobody",
            passwd: Some("root:x:0:0::/:/bin/sh\n"),
            ..req()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "security_context.run_as_username \"nobody\": not found in the image's /etc/passwd"
        );
        let err = resolve_user(&UserRequest {
            run_as_group: Some(5),
            ..req()
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("security_context.run_as_group:"), "{err}");
        assert!(resolve_user(&UserRequest {
            run_as_user: Some(-1),
            ..req()
        })
        .is_err());
    }

    #[test]
    fn strict_groups_ignore_etc_group() {
        let u = resolve_user(&UserRequest {
            run_as_user: Some(1000),
            supplemental_groups: &[300],
            strict_groups: true,
            ..req()
        })
        .unwrap();
        assert_eq!(u.additional_gids, [300, 1000]);
    }
}
