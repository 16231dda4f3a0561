//! The daemon's API as a program sees it (issue 13): every answer typed,
//! every error one JSON body with a stable code and the HTTP status of
//! that code, whatever went wrong (an unknown machine, a refused
//! transition, a conflict, a body that does not parse, a route that does
//! not exist). A real `standby serve` on a deployment in a temporary
//! folder, asked through the typed client the CLI uses.

mod support;

use standby_api::{Client, ClientError, ErrorCode, Hint, PointRequest, Policy, ProtectRequest, StopRequest};
use standby_lifecycle::{Command, State};
use support::{path, run};

fn refused(answer: Result<impl std::fmt::Debug, ClientError>) -> (u16, standby_api::ErrorBody) {
    match answer {
        Err(ClientError::Api { status, body }) => (status, body),
        other => panic!("expected an error body, got {other:?}"),
    }
}

#[test]
fn errors_carry_a_stable_code_with_its_status() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    let disk = root.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    run(&["machine", "add", "web", "--disk", path(&disk), "--home", h]).ok();
    let _daemon = support::daemon::Daemon::start(&home);
    let client = Client::unix(&home.join("run/standby.sock"));

    let health = client.health().unwrap();
    assert_eq!(health.pid, client.health().unwrap().pid);
    let listed = client.machines().unwrap();
    assert_eq!(listed.machines[0].state, State::Unprotected);
    assert_eq!(listed.machines[0].runtime.as_ref().map(|r| r.running), Some(false));

    // An unknown machine: 404 not_found.
    let (status, body) = refused(client.start("nobody"));
    assert_eq!((status, body.code), (404, ErrorCode::NotFound), "{body:?}");
    assert!(body.message.contains("no machine named 'nobody'"), "{body:?}");
    // The next step comes as an operation, not as a command line.
    assert_eq!(body.hint, Some(Hint::AddMachine), "{body:?}");
    assert!(!body.message.contains("standby "), "{body:?}");

    // A command the machine's state does not accept: 409 with the state
    // and what it allows.
    let (status, body) = refused(client.act("web", Command::Commit, &serde_json::json!({})));
    assert_eq!((status, body.code), (409, ErrorCode::TransitionRefused), "{body:?}");
    assert_eq!(body.state, Some(State::Unprotected));
    assert!(body.allowed.contains(&"protect".to_string()), "{body:?}");
    let (_, body) = refused(client.act("web", Command::TestFailover, &PointRequest::default()));
    assert_eq!(body.code, ErrorCode::TransitionRefused);

    // Something in the way: 409 conflict.
    let (status, body) = refused(client.stop("web", &StopRequest::default()));
    assert_eq!((status, body.code), (409, ErrorCode::Conflict), "{body:?}");
    assert_eq!(body.hint, Some(Hint::StartMachine { machine: "web".into() }), "{body:?}");
    let default = client.policies().unwrap().policies.remove(0);
    let (status, body) = refused(client.add_policy(&default));
    assert_eq!((status, body.code), (409, ErrorCode::Conflict), "{body:?}");

    // Bad input: 400 bad_request, named.
    let (status, body) = refused(client.act("web", Command::Protect, &serde_json::json!({"policy": 7})));
    assert_eq!((status, body.code), (400, ErrorCode::BadRequest), "{body:?}");
    assert!(body.message.contains("the request's body"), "{body:?}");
    let (_, body) =
        refused(client.act("web", Command::Protect, &ProtectRequest { policy: Some("platinum".into()), group: None }));
    assert_eq!(body.code, ErrorCode::NotFound, "an unknown policy: {body:?}");
    let zero = Policy { name: "zero".into(), bookmark_seconds: 0, ..default.clone() };
    let (status, body) = refused(client.add_policy(&zero));
    assert_eq!((status, body.code), (400, ErrorCode::BadRequest), "{body:?}");
    let (status, body) = refused(client.act("web", Command::ChangePoint, &PointRequest::default()));
    assert_eq!((status, body.code), (400, ErrorCode::BadRequest), "{body:?}");
    assert!(body.message.contains("point"), "{body:?}");

    // No such route or job: 404, in the same body.
    let (status, body) = refused(client.get::<serde_json::Value>("/v2/anything"));
    assert_eq!((status, body.code), (404, ErrorCode::NotFound), "{body:?}");
    let (_, body) = refused(client.job(999));
    assert_eq!((body.code, body.hint), (ErrorCode::NotFound, Some(Hint::ListJobs)));
    let (_, body) = refused(client.get::<serde_json::Value>("/v1/jobs/seven"));
    assert_eq!(body.code, ErrorCode::NotFound);

    // Nothing changed: the machine is still unprotected, no job was left.
    assert_eq!(client.machines().unwrap().machines[0].state, State::Unprotected);
    assert!(client.jobs().unwrap().jobs.is_empty(), "refusals leave no job behind");
}
