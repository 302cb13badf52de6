// The mark control: start and stop a tag with one click (POST /api/tags), and the
// list of exports (issue: pivot jobs) when the server offers them.

async function call(method, path, body) {
  const response = await fetch(path, {
    method, headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(data && data.detail ? JSON.stringify(data.detail) : response.statusText);
  return data;
}

export function setupMark(root) {
  const name = root.querySelector("input");
  const button = root.querySelector("button");
  const message = root.querySelector("output");
  let open = null;
  const defaultName = () => `mark-${new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-")}`;
  name.placeholder = defaultName();
  button.onclick = async () => {
    try {
      if (open) {
        const tag = await call("POST", `/api/tags/${encodeURIComponent(open)}/stop`, {});
        message.value = `tag ${tag.name}: ${tag.start} → ${tag.end}`;
        open = null;
        button.textContent = "start mark";
        root.classList.remove("recording");
        name.disabled = false;
        name.value = "";
        name.placeholder = defaultName();
      } else {
        const tag = await call("POST", "/api/tags", { name: name.value || name.placeholder, start: "now" });
        open = tag.name;
        message.value = `marking ${tag.name} since ${tag.start}`;
        button.textContent = "stop mark";
        root.classList.add("recording");
        name.disabled = true;
      }
    } catch (err) {
      message.value = `mark failed: ${err.message}`;
    }
  };
}

export { call };
