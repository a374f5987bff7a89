"""Resumes (or starts) a tus upload with tuspy: python3 upload.py URL FILE TOKEN. URL is an
existing upload's URL: the client asks it for its offset (HEAD) and sends the rest in 5 MiB
PATCHes. Prints "done"."""
import sys

from tusclient import client

url, path, token = sys.argv[1:4]
base = url.rsplit("/files/", 1)[0] + "/files/"
c = client.TusClient(base, headers={"Authorization": "Bearer " + token})
c.uploader(path, url=url, chunk_size=5 * 1024 * 1024, retries=3, retry_delay=1).upload()
print("done")
