from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from portal.errors import get_or_404

from . import selectors
from .choices import Window
from .figures import chart_figure, has_data


@login_required
def dashboard(request):
    """Metrics of one endpoint, or of one target model on it, over a chosen window."""
    board = get_or_404(
        selectors.dashboard_get,
        endpoint_name=request.GET.get("endpoint", ""),
        target_model=request.GET.get("model", ""),
        window=request.GET.get("window", Window.HOUR),
    )
    charts = [
        {
            "key": chart.key,
            "dom_id": f"figure-{chart.key}",
            "title": chart.title,
            "figure": chart_figure(
                chart,
                series,
                start=board.start,
                end=board.end,
                period=board.period,
                events=board.events,
            ),
            "has_data": has_data(series),
        }
        for chart, series in board.charts
    ]
    # htmx refreshes only the charts.
    partial = bool(request.headers.get("HX-Request"))
    template = "monitoring/_charts.html" if partial else "monitoring/dashboard.html"
    return render(
        request,
        template,
        {
            "nav_section": "dashboards",
            "board": board,
            "charts": charts,
            "windows": Window.choices,
        },
    )
