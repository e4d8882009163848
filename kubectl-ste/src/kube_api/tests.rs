//! The Kubernetes calls against `tower_test`'s mock service: request
//! methods, paths and label selectors, and what is made of the answers.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::json;
use tower_test::mock::{self, Handle};

use super::*;

type MockHandle = Handle<Request<Body>, Response<Body>>;

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));

fn mock_client() -> (kube::Client, MockHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

fn query(request: &Request<Body>) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

fn pod(name: &str, phase: &str, ready: bool, node: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "kube-system", "resourceVersion": "42"},
        "spec": {"nodeName": node, "containers": []},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    })
}

fn pod_list(items: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})
}

fn node(name: &str, addresses: &[(&str, &str)], labels: &[(&str, &str)]) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": addresses.iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>()}
    })
}

#[tokio::test]
async fn router_pod_is_found_by_label_in_kube_system() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/api/v1/namespaces/kube-system/pods");
        assert_eq!(
            query(&request).get("labelSelector").map(String::as_str),
            Some("app.kubernetes.io/name=ste-router")
        );
        assert!(
            request
                .uri()
                .to_string()
                .contains("labelSelector=app.kubernetes.io%2Fname%3Dste-router"),
            "{}",
            request.uri()
        );
        send.send_response(json_response(
            StatusCode::OK,
            pod_list(vec![
                pod("ste-router-a", "Pending", false, "cp-1"),
                pod("ste-router-b", "Running", false, "cp-1"),
                pod("ste-router-c", "Running", true, "cp-2"),
            ]),
        ));
    });
    let found = find_router_pod(&client, TIMEOUT)
        .await
        .expect("a router pod");
    assert_eq!(found, "ste-router-c", "a running, ready pod is preferred");
    server.await.unwrap();
}

#[tokio::test]
async fn no_router_pod_says_how_to_set_the_address() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("a request");
        send.send_response(json_response(
            StatusCode::OK,
            pod_list(vec![pod("ste-router-a", "Pending", false, "cp-1")]),
        ));
    });
    let err = find_router_pod(&client, TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no running STE router pod in kube-system"),
        "{err}"
    );
    assert!(err.ends_with(crate::connect::HOW_TO_SET), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn agent_pods_by_node() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.uri().path(), "/api/v1/namespaces/kube-system/pods");
        assert_eq!(
            query(&request).get("labelSelector").map(String::as_str),
            Some("app.kubernetes.io/name=ste-agent")
        );
        send.send_response(json_response(
            StatusCode::OK,
            pod_list(vec![
                pod("ste-agent-x1", "Running", true, "node-a"),
                pod("ste-agent-x2", "Running", true, "node-b"),
                pod("ste-agent-x3", "Failed", false, "node-c"),
            ]),
        ));
    });
    let pods = agent_pods(&client, TIMEOUT).await.unwrap();
    assert_eq!(pods.len(), 2);
    assert_eq!(pods["node-a"], "ste-agent-x1");
    assert_eq!(pods["node-b"], "ste-agent-x2");
    server.await.unwrap();
}

/// The node list → the prototype's shard URLs → its placements, checked
/// against the golden vectors of ste-core's fork tests.
#[tokio::test]
async fn node_list_gives_fork_shards_and_golden_placements() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/api/v1/nodes");
        send.send_response(json_response(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [
                node("worker-3", &[("Hostname", "worker-3"), ("InternalIP", "10.0.0.3")], &[]),
                node("worker-1", &[("InternalIP", "10.0.0.1"), ("ExternalIP", "1.2.3.4")], &[]),
                node("worker-2", &[("InternalIP", "10.0.0.2")], &[]),
                node("control", &[("InternalIP", "10.0.0.9")], &[("no-shard", "true")]),
                node("external-only", &[("ExternalIP", "5.6.7.8")], &[]),
            ]}),
        ));
    });
    let nodes = list_nodes(&client, TIMEOUT).await.unwrap();
    server.await.unwrap();
    let shards = fork_shards(&nodes);
    let names: Vec<&str> = shards.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(names, ["worker-1", "worker-2", "worker-3"]);
    assert_eq!(shards[0].url, "https://10.0.0.1:2279");
    assert_eq!(shards[0].ip, "10.0.0.1");

    use crate::cli::Placement;
    use crate::cmd::locate::fork_locate;
    let at = |p, pod| fork_locate(p, &shards, "default", pod).unwrap().1.node;
    assert_eq!(at(Placement::ForkRing, "nginx"), "worker-2");
    assert_eq!(at(Placement::ForkRing, "web-7d4b9c6f5-abcde"), "worker-1");
    assert_eq!(at(Placement::ForkSuffix, "web-0-1b2wj30"), "worker-1");
    assert_eq!(at(Placement::ForkSuffix, "x-024k8tr"), "worker-2");
}

#[tokio::test]
async fn port_forward_asks_for_the_pods_portforward_subresource() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/kube-system/pods/ste-router-0/portforward"
        );
        assert_eq!(
            query(&request).get("ports").map(String::as_str),
            Some("2492")
        );
        let headers = request.headers();
        assert_eq!(headers["upgrade"], "websocket");
        assert!(
            headers["sec-websocket-protocol"]
                .to_str()
                .unwrap()
                .contains("v4.channel.k8s.io")
        );
        send.send_response(json_response(
            StatusCode::FORBIDDEN,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "pods \"ste-router-0\" is forbidden: cannot create resource \"pods/portforward\"",
                   "reason": "Forbidden", "code": 403}),
        ));
    });
    let result = port_forward(
        &client,
        STE_NAMESPACE,
        "ste-router-0",
        ROUTER_USER_PORT,
        TIMEOUT,
    )
    .await;
    let err = result.err().expect("the upgrade was refused").to_string();
    assert!(
        err.starts_with("error: cannot port-forward to kube-system/ste-router-0 port 2492"),
        "{err}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn get_pod_found_and_not_found() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.uri().path(), "/api/v1/namespaces/team-a/pods/web-0");
        send.send_response(json_response(
            StatusCode::OK,
            pod("web-0", "Running", true, "n"),
        ));
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.uri().path(), "/api/v1/namespaces/team-a/pods/gone");
        send.send_response(json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "pods \"gone\" not found", "reason": "NotFound", "code": 404}),
        ));
    });
    let found = get_pod(&client, "team-a", "web-0", TIMEOUT).await.unwrap();
    assert_eq!(found.unwrap().resource_version.as_deref(), Some("42"));
    assert_eq!(
        get_pod(&client, "team-a", "gone", TIMEOUT).await.unwrap(),
        None
    );
    server.await.unwrap();
}

#[tokio::test]
async fn an_api_server_that_does_not_answer_is_bounded_by_the_timeout() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        // Take the request and never answer.
        let pending = handle.next_request().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(pending);
    });
    let started = std::time::Instant::now();
    let err = list_nodes(&client, Some(Duration::from_millis(300)))
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.contains("did not answer within 300ms"), "{err}");
    server.abort();
}

#[tokio::test]
async fn the_ste_ca_is_read_from_its_configmap() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/kube-system/configmaps/ste-ca"
        );
        send.send_response(json_response(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "ste-ca", "namespace": "kube-system"},
                   "data": {"ca.crt": "PEM"}}),
        ));
        let (_, send) = handle.next_request().await.expect("a request");
        send.send_response(json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "configmaps \"ste-ca\" not found", "reason": "NotFound", "code": 404}),
        ));
        let (_, send) = handle.next_request().await.expect("a request");
        send.send_response(json_response(
            StatusCode::FORBIDDEN,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "configmaps \"ste-ca\" is forbidden", "reason": "Forbidden", "code": 403}),
        ));
    });
    assert_eq!(
        ste_ca(&client, TIMEOUT).await.unwrap().as_deref(),
        Some("PEM")
    );
    assert_eq!(ste_ca(&client, TIMEOUT).await.unwrap(), None);
    let err = ste_ca(&client, TIMEOUT).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "error: cannot read the STE CA from the ConfigMap kube-system/ste-ca: Error from server \
         (Forbidden): configmaps \"ste-ca\" is forbidden"
    );
    server.await.unwrap();
}
