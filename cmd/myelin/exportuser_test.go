package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// call makes an authenticated request with a raw body and decodes the JSON answer.
func call(t *testing.T, method, url, token, contentType string, body []byte) map[string]any {
	t.Helper()
	var resp *http.Response
	var data []byte
	for {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", contentType)
		var err error
		if resp, err = http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		}
		data, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			break
		}
		time.Sleep(100 * time.Millisecond) // the per-user rate limit
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s %s = %d %s", method, url, resp.StatusCode, data)
	}
	return out
}

func callJSON(t *testing.T, method, url, token string, body any) map[string]any {
	raw, _ := json.Marshal(body)
	return call(t, method, url, token, "application/json", raw)
}

// TestExportUser: a user's data made through the client API comes back out
// of `myelin export-user` (run beside the live server), part by part, with
// no secret in the archive.
func TestExportUser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dataDir, addr := t.TempDir(), freeAddr(t)
	base := "http://" + addr
	startServer(t, bin, dataDir, addr)
	const password = "correct horse battery"
	reg := post(t, base+"/_matrix/client/v3/register", "", map[string]any{
		"username": "alice", "password": password, "initial_device_display_name": "Alice's phone",
		"auth": map[string]string{"type": "m.login.dummy"}})
	token := reg["access_token"].(string)
	refresh, _ := reg["refresh_token"].(string)
	c := base + "/_matrix/client/v3"
	callJSON(t, "PUT", c+"/profile/@alice:localhost/displayname", token, map[string]any{"displayname": "Alice Exporter"})
	room := callJSON(t, "POST", c+"/createRoom", token, map[string]any{"name": "Export room"})["room_id"].(string)
	const messages = 520 // with the room's state events, more than one page of 500
	for i := range messages {
		callJSON(t, "PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/t%d", c, room, i), token,
			map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message number %d", i)})
	}
	image := []byte("\x89PNG exported picture")
	mxc := call(t, "POST", base+"/_matrix/media/v3/upload?filename=pic.png", token, "image/png", image)["content_uri"].(string)
	callJSON(t, "PUT", c+"/user/@alice:localhost/account_data/org.example.settings", token, map[string]any{"theme": "dark"})
	callJSON(t, "PUT", c+"/user/@alice:localhost/rooms/"+room+"/account_data/m.tag", token, map[string]any{"tags": map[string]any{"u.work": map[string]any{}}})
	filterID := callJSON(t, "POST", c+"/user/@alice:localhost/filter", token, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 7}}})["filter_id"].(string)
	callJSON(t, "PUT", c+"/pushrules/global/content/myrule", token, map[string]any{"pattern": "cake", "actions": []string{"notify"}})
	callJSON(t, "POST", c+"/pushers/set", token, map[string]any{"kind": "http", "app_id": "org.example.app", "pushkey": "pk1",
		"app_display_name": "App", "device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify"}})

	out := filepath.Join(t.TempDir(), "alice.zip")
	cmdOut, err := exec.Command(bin, "export-user", "@alice:localhost", "--data-dir", dataDir, "--out", out).CombinedOutput()
	if err != nil {
		t.Fatalf("export-user: %v\n%s", err, cmdOut)
	}
	t.Logf("export-user: %s", cmdOut)
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	files := map[string][]byte{}
	var all []byte
	for _, f := range zr.File {
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		r.Close()
		files[f.Name] = b
		all = append(all, b...)
	}
	get := func(name string, v any) {
		t.Helper()
		b, ok := files[name]
		if !ok {
			t.Fatalf("%s missing from the archive (has %v)", name, keys(files))
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	var manifest struct {
		Format        string `json:"format"`
		FormatVersion int    `json:"format_version"`
		UserID        string `json:"user_id"`
		Counts        struct{ Messages, Media, Rooms, Devices int }
	}
	get("manifest.json", &manifest)
	if manifest.Format != "myelin-user-export" || manifest.FormatVersion != 1 || manifest.UserID != "@alice:localhost" ||
		manifest.Counts.Media != 1 || manifest.Counts.Rooms != 1 || manifest.Counts.Devices != 1 {
		t.Errorf("manifest: %+v", manifest)
	}
	var profile map[string]any
	get("profile.json", &profile)
	if profile["displayname"] != "Alice Exporter" || profile["user_id"] != "@alice:localhost" || profile["erased"] != false {
		t.Errorf("profile.json: %v", profile)
	}
	var devices []map[string]any
	get("devices.json", &devices)
	if len(devices) != 1 || devices[0]["device_id"] != reg["device_id"] || devices[0]["display_name"] != "Alice's phone" {
		t.Errorf("devices.json: %v", devices)
	}
	var ad struct {
		Global map[string]map[string]any
		Rooms  map[string]map[string]map[string]any
	}
	get("account_data.json", &ad)
	if ad.Global["org.example.settings"]["theme"] != "dark" || ad.Rooms[room]["m.tag"] == nil {
		t.Errorf("account_data.json: %s", files["account_data.json"])
	}
	if !bytes.Contains(files["push_rules.json"], []byte(`"cake"`)) {
		t.Errorf("push_rules.json lacks the user's rule: %s", files["push_rules.json"])
	}
	var pushers []map[string]any
	get("pushers.json", &pushers)
	if len(pushers) != 1 || pushers[0]["pushkey"] != "pk1" {
		t.Errorf("pushers.json: %v", pushers)
	}
	var filters []map[string]any
	get("filters.json", &filters)
	if len(filters) != 1 || filters[0]["filter_id"] != filterID {
		t.Errorf("filters.json: %v", filters)
	}
	var rooms []map[string]any
	get("rooms.json", &rooms)
	if len(rooms) != 1 || rooms[0]["room_id"] != room || rooms[0]["membership"] != "join" {
		t.Errorf("rooms.json: %v", rooms)
	}
	// messages.jsonl: every message once, in order, in the client format.
	sc := bufio.NewScanner(bytes.NewReader(files["messages.jsonl"]))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	next, lines := 0, 0
	for sc.Scan() {
		lines++
		var ev struct {
			Content map[string]any `json:"content"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("messages.jsonl line %d: %v", lines, err)
		}
		var e map[string]any
		_ = json.Unmarshal(sc.Bytes(), &e)
		if e["sender"] != "@alice:localhost" {
			t.Fatalf("messages.jsonl line %d not alice's: %s", lines, sc.Bytes())
		}
		if e["type"] == "m.room.message" {
			if want := fmt.Sprintf("message number %d", next); ev.Content["body"] != want {
				t.Fatalf("messages.jsonl: message %q, want %q", ev.Content["body"], want)
			}
			next++
		}
	}
	if next != messages || manifest.Counts.Messages != lines {
		t.Errorf("messages.jsonl: %d messages of %d, %d lines, manifest says %d", next, messages, lines, manifest.Counts.Messages)
	}
	// media.jsonl and the file.
	var media map[string]any
	get("media.jsonl", &media)
	sum := sha256.Sum256(image)
	if media["mxc"] != mxc || media["content_type"] != "image/png" || media["filename"] != "pic.png" || media["sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("media.jsonl: %v", media)
	}
	if f, _ := media["file"].(string); !bytes.Equal(files[f], image) {
		t.Errorf("media file %q: %q", f, files[f])
	}
	// No secrets: neither the tokens, nor their hashes, nor the password or its hash.
	secrets := []string{token, password, "$argon2"}
	if refresh != "" {
		secrets = append(secrets, refresh)
	}
	for _, tok := range []string{token, refresh} {
		if tok == "" {
			continue
		}
		h := sha256.Sum256([]byte(tok))
		secrets = append(secrets, hex.EncodeToString(h[:]), base64.RawStdEncoding.EncodeToString(h[:]), base64.RawURLEncoding.EncodeToString(h[:]))
	}
	for _, s := range secrets {
		if bytes.Contains(all, []byte(s)) {
			t.Errorf("the archive holds a secret (%.12s…)", s)
		}
	}

	// An unknown user: an error, no archive.
	bad := filepath.Join(t.TempDir(), "nobody.zip")
	if out, err := exec.Command(bin, "export-user", "@nobody:localhost", "--data-dir", dataDir, "--out", bad).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "no user") {
		t.Errorf("export of an unknown user: %v %s", err, out)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
