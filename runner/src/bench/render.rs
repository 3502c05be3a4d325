//! The benchmark's numbers as a table for the terminal and an SVG chart,
//! each driver against the plain directory.

use super::data::{BenchDriver, BenchReport, Measurement, Workload};

/// Fills in each measurement's ratio to the plain directory's median.
pub fn ratios(results: &mut [Measurement]) {
    let plain: Vec<(Workload, f64)> =
        results.iter().filter(|m| m.driver == BenchDriver::Plain).map(|m| (m.workload, m.median_ms)).collect();
    for m in results.iter_mut() {
        m.ratio_to_plain = plain.iter().find(|(w, _)| *w == m.workload).map(|(_, p)| m.median_ms / p.max(1e-6));
    }
}

/// The terminal tables: median time with the ratio to the plain directory,
/// then throughput; one row per workload, one column per driver.
pub fn table(r: &BenchReport, drivers: &[BenchDriver]) -> String {
    let cell = |m: &Measurement, time: bool| {
        if time {
            let r = m.ratio_to_plain.unwrap_or(f64::NAN);
            if r >= 100.0 {
                format!("{:.1} ms x{r:.0}", m.median_ms)
            } else {
                format!("{:.1} ms x{r:.2}", m.median_ms)
            }
        } else {
            format!("{:.0} {}", m.throughput, m.unit)
        }
    };
    let mut s = String::new();
    for (time, title) in
        [(true, "median time, and relative to plain (x1.00 = as fast, higher is slower)"), (false, "throughput")]
    {
        s.push_str(&format!("{title}\n{:<14}", "workload"));
        for d in drivers {
            s.push_str(&format!("{:>20}", d.name()));
        }
        s.push('\n');
        for w in Workload::ALL {
            if !r.results.iter().any(|m| m.workload == w) {
                continue;
            }
            s.push_str(&format!("{:<14}", w.name()));
            for d in drivers {
                let c = r
                    .results
                    .iter()
                    .find(|m| m.driver == *d && m.workload == w)
                    .map_or("-".to_string(), |m| cell(m, time));
                s.push_str(&format!("{c:>20}"));
            }
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

/// A grouped bar chart (per workload, one bar per driver) of the time relative
/// to the plain directory, as a self-contained SVG.
pub fn svg(r: &BenchReport, drivers: &[BenchDriver]) -> String {
    let colors = ["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd"];
    let workloads: Vec<Workload> =
        Workload::ALL.into_iter().filter(|w| r.results.iter().any(|m| m.workload == *w)).collect();
    let max = r.results.iter().filter_map(|m| m.ratio_to_plain).fold(1.0f64, f64::max);
    // A log scale keeps a 100x driver from flattening the others.
    let top = max.log10().ceil().max(1.0);
    let (w, h, left, bottom, topm) = (120 * workloads.len() + 120, 420usize, 60usize, 60usize, 40usize);
    let plot_h = (h - bottom - topm) as f64;
    let y = |ratio: f64| topm as f64 + plot_h * (1.0 - (ratio.max(0.1).log10() + 1.0) / (top + 1.0));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">Median time relative to a plain directory (log scale, lower is better), kernel {}</text>\n",
        r.kernel
    );
    for e in -1..=(top as i32) {
        let v = 10f64.powi(e);
        let yy = y(v);
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">x{}</text>\n",
            w - 20,
            left - 5,
            yy + 4.0,
            if v < 1.0 { format!("{v:.1}") } else { format!("{v:.0}") }
        ));
    }
    let group = 120.0;
    let bar = (group - 20.0) / drivers.len() as f64;
    for (i, wl) in workloads.iter().enumerate() {
        let x0 = left as f64 + 10.0 + i as f64 * group;
        for (j, d) in drivers.iter().enumerate() {
            if let Some(m) = r.results.iter().find(|m| m.driver == *d && m.workload == *wl) {
                let ratio = m.ratio_to_plain.unwrap_or(1.0);
                let (y1, y0) = (y(ratio), y(0.1));
                s.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{y1:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {:.1} ms, x{ratio:.2}</title></rect>\n",
                    x0 + j as f64 * bar,
                    bar - 2.0,
                    (y0 - y1).max(0.0),
                    colors[j % colors.len()],
                    d.name(),
                    wl.name(),
                    m.median_ms
                ));
            }
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            x0 + (group - 20.0) / 2.0,
            h - bottom + 18,
            wl.name()
        ));
    }
    for (j, d) in drivers.iter().enumerate() {
        let x = left + j * 110;
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            h - 24,
            colors[j % colors.len()],
            x + 16,
            h - 14,
            d.name()
        ));
    }
    s.push_str("</svg>\n");
    s
}
