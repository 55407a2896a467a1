"""The web demo in a real browser: `python -m hawk_jax.demo` serves a tiny checkpoint on
127.0.0.1, headless Chromium (Debian's, driven by Selenium through chromium-driver) uploads a
synthetic video, clicks Describe and reads the streamed answer, which must be `describe`'s greedy
output for the same video and settings (computed here with the Engine); then one chat turn,
which must be a Conversation's answer.

A screenshot of the page is saved under the test's tmp dir (its path is printed); with
HAWK_WRITE_SCREENSHOT=1 it is copied to docs/images/demo.png as well.

Needs Chromium, chromium-driver, selenium and gradio; without them it is skipped with the
commands that install them."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from hawk_jax.infer.conversation import Conversation
from hawk_jax.infer.engine import GenerationOptions
from tests.demo.conftest import MAX_NEW, NUM_FRAMES
from tests.support import ROOT

INSTALL = ("apt-get install chromium chromium-driver (Debian's Chromium and its driver); "
           "pip install -e '.[demo]' (gradio) and -e '.[test]' (selenium)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 90        # for the page's longest step (the first describe compiles the model)


def _needs():
  missing = [name for name, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
             if not ok]
  for module in ("selenium", "gradio"):
    try:
      __import__(module)
    except ImportError:
      missing.append(module)
  return missing


pytestmark = pytest.mark.skipif(bool(_needs()), reason=f"needs {', '.join(_needs())}: {INSTALL}")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def server(demo_workdir, tmp_path):
  """The demo as a user starts it, on a free port of 127.0.0.1; yields its URL."""
  port = _free_port()
  env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", JAX_PLATFORMS="cpu",
             JAX_DEFAULT_MATMUL_PRECISION="highest", PYTHONUNBUFFERED="1",
             # One CPU device: the engine of this test (layout single) computes the same.
             XLA_FLAGS="--xla_force_host_platform_device_count=1",
             GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
  log_path = tmp_path / "demo.log"
  log = open(log_path, "w", encoding="utf-8")
  proc = subprocess.Popen([sys.executable, "-m", "hawk_jax.demo", "--checkpoint", demo_workdir,
                           "--host", "127.0.0.1", "--port", str(port)],
                          cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 120
    while True:
      if proc.poll() is not None:
        pytest.fail(f"the demo exited with {proc.returncode}:\n{log_path.read_text()}")
      try:
        with urllib.request.urlopen(url, timeout=2) as r:
          if r.status == 200:
            break
      except OSError:
        pass
      if time.monotonic() > deadline:
        pytest.fail(f"the demo did not answer at {url}:\n{log_path.read_text()}")
      time.sleep(0.5)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    log.close()


@pytest.fixture
def browser():
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1250", "--disable-extensions", "--no-first-run"):
    options.add_argument(arg)
  # The Debian driver given explicitly: Selenium Manager downloads nothing.
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  try:
    yield driver
  finally:
    driver.quit()


def test_upload_describe_and_chat_in_a_browser(server, browser, demo_engine, demo_video,
                                               tmp_path):
  from selenium.common.exceptions import TimeoutException
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import WebDriverWait

  def wait(until, timeout=WAIT_S):
    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(lambda d: until())

  def find(css, timeout=WAIT_S):
    """The element, once the page has rendered it (Gradio renders the page in pieces)."""
    return wait(lambda: browser.find_element(By.CSS_SELECTOR, css), timeout)

  def status():
    return find("#status").text

  def shot(name):
    """The whole page (the window grown to its height), from the top."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(height, 800), 3000) + 40)
    browser.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)
    path = str(tmp_path / name)
    browser.save_screenshot(path)
    return path

  greedy = GenerationOptions(max_new_tokens=MAX_NEW)   # the page's defaults: the run config's
  expected = demo_engine.describe([demo_video], options=greedy)[0].text
  conversation = Conversation(demo_engine, demo_engine.load_video(demo_video), options=greedy)
  expected_chat = "".join(conversation.ask("What happens?"))
  assert expected and expected_chat

  browser.get(server)
  upload = find("#video input[type=file]")
  try:
    # Bad input first: Describe without a video is a message on the page.
    find("#describe").click()
    wait(lambda: "no video" in status(), timeout=30)

    upload.send_keys(demo_video)
    wait(lambda: "square.webm: 4 frames" in status())
    # One image per sampled frame: the frame and its motion side by side.
    wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#frames img")) >= NUM_FRAMES)
    # The uploaded video plays in the page's player (it has decoded its first frame).
    wait(lambda: browser.execute_script(
        "const v = document.querySelector('#video video'); return v && v.readyState >= 2"),
         timeout=30)

    find("#describe").click()
    wait(lambda: "done" in status())

    def description():
      return find("#description textarea").get_attribute("value")
    try:
      wait(lambda: description() == expected, timeout=10)
    except TimeoutException:
      assert description() == expected

    message = find("#message textarea, #message input")
    message.send_keys("What happens?")
    message.send_keys(Keys.ENTER)
    wait(lambda: "1 turn(s)" in status())

    def bubbles():
      return [b.text.strip() for b in browser.find_elements(By.CSS_SELECTOR, "#chat .message")]
    try:
      wait(lambda: expected_chat in bubbles(), timeout=10)
    except TimeoutException:
      assert expected_chat in bubbles()
  except Exception:
    try:
      print(f"screenshot of the failure: {shot('demo_failure.png')}")
    except Exception as e:  # noqa: BLE001 -- the test's own error is the one to see
      print(f"no screenshot of the failure: {e}")
    print(f"the demo's log:\n{(tmp_path / 'demo.log').read_text()[-4000:]}")
    raise

  path = shot("demo.png")
  print(f"screenshot: {path}")
  if os.environ.get("HAWK_WRITE_SCREENSHOT") == "1":
    docs = ROOT / "docs" / "images" / "demo.png"
    docs.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, docs)
    print(f"screenshot copied to {docs}")
