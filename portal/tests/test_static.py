"""Static files as production serves them: collectstatic with the production storage names
each file by its hash and stores compressed copies; WhiteNoise answers compressed with
far-future caching. The dashboards' plotly bundle is the basic one."""

from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.templatetags.static import static
from django.test import Client

from portal.settings import base

PLOTLY = "vendor/plotly/plotly-basic.min.js"


def test_production_storage_is_hashed_and_compressed():
    assert base.STORAGES["staticfiles"]["BACKEND"] == (
        "whitenoise.storage.CompressedManifestStaticFilesStorage"
    )


def test_the_vendored_plotly_bundle_is_the_basic_one_with_its_licence():
    folder = Path(django_settings.BASE_DIR) / "static" / "vendor" / "plotly"
    bundle = (folder / "plotly-basic.min.js").read_bytes()
    assert bundle.startswith(b"/**\n* plotly.js (basic - minified)")
    # The full bundle the plotly package ships is 4.8 MB.
    assert len(bundle) < 1_500_000
    assert "MIT License" in (folder / "LICENSE.txt").read_text()


@pytest.fixture
def collected(settings, tmp_path):
    """collectstatic of the portal's own folder with the production storage, and a
    WhiteNoise that serves the result."""
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {**settings.STORAGES, "staticfiles": base.STORAGES["staticfiles"]}
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    settings.WHITENOISE_USE_FINDERS = False
    call_command("collectstatic", interactive=False, verbosity=0)
    return tmp_path


@pytest.mark.django_db
def test_static_files_are_served_compressed_and_cached_for_a_year(collected):
    url = static(PLOTLY)
    # The name carries the content hash, so a new bundle is a new address.
    assert url != f"/static/{PLOTLY}" and url.endswith(".js")
    # A fresh handler, so WhiteNoise reads the collected folder.
    client = Client()
    response = client.get(url, HTTP_ACCEPT_ENCODING="gzip, br")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "br"
    assert "immutable" in response["Cache-Control"]
    max_age = int(response["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert max_age >= 365 * 24 * 3600
    body = b"".join(response.streaming_content)
    assert len(body) < 400_000  # 1.2 MB uncompressed

    css = client.get(static("css/berth.css"), HTTP_ACCEPT_ENCODING="gzip")
    assert css.status_code == 200 and css["Content-Encoding"] == "gzip"
