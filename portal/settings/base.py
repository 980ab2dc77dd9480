"""Core Django settings."""

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .env import BASE_DIR, env_bool, env_int, env_list, env_str, var_dir

DEVELOPMENT_SECRET_KEY = "berth-insecure-development-key-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "") or (
    Path(env_str("DJANGO_SECRET_KEY_FILE")).read_text(encoding="utf-8").strip()
    if env_str("DJANGO_SECRET_KEY_FILE")
    else DEVELOPMENT_SECRET_KEY
)
DEBUG = env_bool("DJANGO_DEBUG", False)
if SECRET_KEY == DEVELOPMENT_SECRET_KEY and not DEBUG:
    # Sessions, CSRF and password-reset links are signed with it: a published key forges them.
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set and DJANGO_DEBUG is off: "
        "set a secret key (./scripts/run generates one into var/), or DJANGO_DEBUG=1 to develop"
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# The portal's own page (navigation, a way on) rather than Django's debugging page.
CSRF_FAILURE_VIEW = "portal.views.csrf_failure"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "portal",
    "runs",
    "registry",
    "deployments",
    "monitoring",
    "loadtests",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.middleware.NotAllowedPageMiddleware",
    # Last, as django-axes asks: it turns a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.navigation",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): every password login, the portal's form and the admin's,
# goes through these backends; API tokens do not, and are unaffected. After
# BERTH_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that pair is
# locked out for BERTH_LOGIN_COOLOFF_MINUTES; a success resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("BERTH_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("BERTH_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# plotly.js is vendored as its "basic" bundle (scatter, bar, pie: 1.2 MB instead of the
# 4.8 MB full bundle the plotly package ships): static/vendor/plotly/.
STATICFILES_DIRS = [BASE_DIR / "static"]
# `manage.py collectstatic` (scripts/run and the image build run it) writes here.
STATIC_ROOT = Path(env_str("BERTH_STATIC_ROOT", str(var_dir() / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Served by the portal itself (WhiteNoise), so the UI works with no internet: collectstatic
# names every file by its content hash and stores gzip and brotli copies beside it, so
# WhiteNoise answers compressed and cacheable for ten years ("immutable"); a changed file
# gets a new name. https://whitenoise.readthedocs.io/en/stable/django.html
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Uploads are streamed to disk, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "portal.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "portal.api.BerthAutoSchema",
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
    # JSON bodies, bounded in size (DATA_UPLOAD_MAX_MEMORY_SIZE) and nesting before parsing.
    # Forms carry no nested lists or objects, so only the upload operation takes them.
    "DEFAULT_PARSER_CLASSES": ["portal.parsers.BoundedJSONParser"],
}
# How deeply API JSON bodies may nest (levels of objects and arrays).
BERTH_API_JSON_MAX_DEPTH = 64

SPECTACULAR_SETTINGS = {
    "TITLE": "Berth API",
    "DESCRIPTION": "Register Triton model repositories, test, deploy and promote them. "
    "Every error answers `{detail, code, field?, errors?}`. Strings never contain NUL "
    "(U+0000): PostgreSQL cannot store it, and it is refused with 400.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and Redoc served by the portal itself, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "berth@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("BERTH_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
