from torchyard.operator.kube import logs


def test_clip_keeps_the_end_from_a_lines_start_and_says_it_cut():
    text = "".join(f"line {i}\n" for i in range(100))

    assert logs.clip(text, 10_000) == text
    clipped = logs.clip(text, 30)
    assert clipped.startswith("[... earlier lines left out ...]\n") and clipped.endswith("line 99\n")
    assert all(line.startswith("line ") for line in clipped.splitlines()[1:])
    assert len(clipped.split("\n", 1)[1].encode()) <= 30
    assert logs.clip("é" * 100, 11).endswith("é")  # never half a character


def test_the_tails_of_a_large_gang_share_one_configmap():
    assert logs.bytes_per_pod(1) == logs.MAX_BYTES_PER_POD
    assert logs.bytes_per_pod(64) * 64 <= logs.TOTAL_BYTES < 1 << 20


def test_the_configmap_names_its_job_attempt_and_why():
    body = logs.configmap("team-a", "digits-mlp", "trainjob", 2, "node 1 exited with code 137; ...",
                          {1: "b\n", 0: "a\n"})

    assert body["metadata"]["name"] == "digits-mlp-previous-logs"
    labels = {"torchyard.dev/job-name": "digits-mlp", "torchyard.dev/kind": "trainjob"}
    assert body["metadata"]["labels"] == labels
    assert body["metadata"]["annotations"]["torchyard.dev/attempt"] == "2"
    assert list(body["data"]) == ["node-0.log", "node-1.log"]
