//! EC2's XML answers: the instance a `RunInstances` made, the state `DescribeInstances`
//! reports, and the code and message of an error.

use roxmltree::{Document, Node};

/// An `<Errors><Error><Code>…</Code><Message>…</Message></Error></Errors>` answer.
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// Whether EC2 may accept the same call later (throttling, its own failures).
    pub fn retryable(&self) -> bool {
        matches!(
            self.code.as_str(),
            "RequestLimitExceeded"
                | "Throttling"
                | "ThrottlingException"
                | "InternalError"
                | "InternalFailure"
                | "ServiceUnavailable"
                | "Unavailable"
                | "InsufficientInstanceCapacity"
        )
    }

    /// Whether the error says the instance does not exist.
    pub fn not_found(&self) -> bool {
        self.code == "InvalidInstanceID.NotFound" || self.code == "InvalidInstanceID.Malformed"
    }
}

/// The instance of a `RunInstances` answer: its id and private address, if given.
pub struct Launched {
    pub id: String,
    pub address: Option<String>,
}

fn parse(xml: &[u8]) -> Result<Document<'_>, String> {
    let text = std::str::from_utf8(xml).map_err(|_| "the answer is not UTF-8".to_string())?;
    Document::parse(text).map_err(|e| format!("the answer is not XML: {e}"))
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(name))
}

fn text_of(node: Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The error an answer carries, if it is one.
pub fn error(xml: &[u8]) -> Option<ApiError> {
    let text = std::str::from_utf8(xml).ok()?;
    let doc = Document::parse(text).ok()?;
    let error = doc.descendants().find(|n| n.has_tag_name("Error"))?;
    Some(ApiError {
        code: text_of(error, "Code").unwrap_or_default(),
        message: text_of(error, "Message").unwrap_or_default(),
    })
}

/// The first instance of a `RunInstancesResponse`.
pub fn launched(xml: &[u8]) -> Result<Launched, String> {
    let doc = parse(xml)?;
    let item = doc
        .descendants()
        .find(|n| n.has_tag_name("instancesSet"))
        .and_then(|set| child(set, "item"))
        .ok_or("the answer names no instance")?;
    let id = text_of(item, "instanceId").ok_or("the answer's instance has no id")?;
    Ok(Launched {
        id,
        address: text_of(item, "privateIpAddress"),
    })
}

/// The state name (`pending`, `running`, `terminated`, …) of instance `id` in a
/// `DescribeInstancesResponse`, or None when the answer does not list it.
pub fn state_of(xml: &[u8], id: &str) -> Result<Option<String>, String> {
    let doc = parse(xml)?;
    let instance = doc
        .descendants()
        .filter(|n| n.has_tag_name("item"))
        .find(|n| text_of(*n, "instanceId").as_deref() == Some(id));
    Ok(instance
        .and_then(|i| child(i, "instanceState"))
        .and_then(|s| text_of(s, "name")))
}
