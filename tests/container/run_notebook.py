"""Run a notebook the way a student does in JupyterLab: through the running Jupyter server. It opens a session
(the server starts the kernel, as its own user), sends every code cell to the kernel over the kernel websocket,
collects the outputs and saves the notebook with them through the contents API (as JupyterLab's save does),
with a checkpoint. Needs only the Python of the image (tornado comes with jupyter_server).

    python run_notebook.py NOTEBOOK OUTPUT '{"image_size": 64}'    # paths relative to the server's root

Reads the server from JUPYTER_URL (default http://127.0.0.1:8888) and the token from JUPYTER_TOKEN, so the token
is on no command line. Prints `kernel uid=U gid=G` (the user the kernel runs as) and exits non-zero when a cell
fails.
"""

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

URL = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888").rstrip("/")
HEADERS = {"Authorization": f"token {os.environ['JUPYTER_TOKEN']}", "Content-Type": "application/json"}
CELL_TIMEOUT = float(os.environ.get("CELL_TIMEOUT", "900"))


async def api(method: str, path: str, body=None):
    request = HTTPRequest(f"{URL}{path}", method=method, headers=HEADERS, request_timeout=120,
                          body=None if body is None else json.dumps(body), allow_nonstandard_methods=True)
    response = await AsyncHTTPClient().fetch(request)
    return json.loads(response.body) if response.body else None


class Kernel:
    def __init__(self, connection, session_id: str):
        self.connection, self.session_id = connection, session_id

    async def execute(self, code: str) -> tuple[list[dict], dict | None]:
        """Run code in the kernel; return its outputs (nbformat) and the error output, if any."""
        msg_id = uuid.uuid4().hex
        message = {"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "container-test",
                              "session": self.session_id, "version": "5.3",
                              "date": datetime.now(UTC).isoformat()},
                   "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
                   "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                               "allow_stdin": False, "stop_on_error": True}}
        await self.connection.write_message(json.dumps(message))
        outputs, error, idle, replied = [], None, False, False
        while not (idle and replied):
            raw = await asyncio.wait_for(self.connection.read_message(), CELL_TIMEOUT)
            if raw is None:
                raise RuntimeError("the kernel connection closed")
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = reply["msg_type"], reply["content"]
            if reply["channel"] == "shell" and kind == "execute_reply":
                replied = True
            elif kind == "status":
                idle = content["execution_state"] == "idle"
            elif kind == "stream":
                outputs.append({"output_type": "stream", "name": content["name"], "text": content["text"]})
            elif kind in ("display_data", "execute_result"):
                output = {"output_type": kind, "data": content["data"], "metadata": content.get("metadata", {})}
                if kind == "execute_result":
                    output["execution_count"] = content["execution_count"]
                outputs.append(output)
            elif kind == "error":
                error = {"output_type": "error", "ename": content["ename"], "evalue": content["evalue"],
                         "traceback": content["traceback"]}
                outputs.append(error)
        return outputs, error


async def main(notebook_path: str, output_path: str, parameters: dict) -> int:
    notebook = (await api("GET", f"/api/contents/{quote(notebook_path)}?content=1"))["content"]
    cells = []
    for cell in notebook["cells"]:
        cells.append(cell)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cells.append({"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
                          "execution_count": None,
                          "source": "\n".join(f"{name} = {value!r}" for name, value in parameters.items())})
    notebook["cells"] = cells

    session = await api("POST", "/api/sessions", {"path": output_path, "type": "notebook", "name": "",
                                                   "kernel": {"name": "python3"}})
    kernel_id, session_id = session["kernel"]["id"], uuid.uuid4().hex
    ws_url = URL.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels?session_id={session_id}"
    connection = await websocket_connect(HTTPRequest(ws_url, headers=HEADERS), max_message_size=1 << 30)
    kernel = Kernel(connection, session_id)
    status = 0
    try:
        outputs, _ = await kernel.execute("import os; print(f'kernel uid={os.getuid()} gid={os.getgid()}')")
        print("".join(output.get("text", "") for output in outputs).strip(), flush=True)
        count = 0
        for index, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] != "code":
                continue
            count += 1
            cell["outputs"], error = await kernel.execute("".join(cell["source"]))
            cell["execution_count"] = count
            if error is not None:
                print(f"cell {index} failed: {error['ename']}: {error['evalue']}", file=sys.stderr)
                status = 1
                break
        print(f"ran {count} code cells", flush=True)
    finally:
        connection.close()
        # Save as JupyterLab does: the notebook with its outputs, then a checkpoint.
        await api("PUT", f"/api/contents/{quote(output_path)}", {"type": "notebook", "format": "json",
                                                                 "content": notebook})
        await api("POST", f"/api/contents/{quote(output_path)}/checkpoints")
        await api("DELETE", f"/api/sessions/{session['id']}")
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})))
