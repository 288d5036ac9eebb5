package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"strings"
)

var (
	white = color.RGBA{255, 255, 255, 255}
	ink   = color.RGBA{40, 40, 40, 255}
	grid  = color.RGBA{225, 225, 225, 255}
	// One colour per target, firetower first and strongest.
	palette = map[string]color.RGBA{
		"firetower":   {220, 80, 30, 255},
		"centrifuge":  {60, 120, 200, 255},
		"melodytopic": {110, 170, 90, 255},
		"naive":       {170, 170, 170, 255},
		"wire":        {90, 90, 90, 255},
		"single":      {220, 80, 30, 255},
		"topicsvc":    {240, 150, 60, 255},
		"redis":       {200, 60, 60, 255},
	}
)

const (
	panelW = 460
	panelH = 250
	cols   = 2
)

// writeChart draws one bar panel per scenario (its own scale: the scenarios
// measure different things) with only the standard library.
func writeChart(path string, charts []chartData) error {
	if len(charts) == 0 {
		return nil
	}
	rows := (len(charts) + cols - 1) / cols
	img := image.NewRGBA(image.Rect(0, 0, panelW*cols, panelH*rows))
	fill(img, img.Bounds(), white)
	for i, cd := range charts {
		x0, y0 := (i%cols)*panelW, (i/cols)*panelH
		drawPanel(img, x0, y0, cd)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func drawPanel(img *image.RGBA, x0, y0 int, cd chartData) {
	text(img, x0+14, y0+10, cd.Scenario+": "+cd.Metric, 2, ink)
	top, bottom := y0+40, y0+panelH-40
	left, right := x0+14, x0+panelW-14
	fill(img, image.Rect(left, bottom, right, bottom+1), ink)
	var peak float64
	for _, v := range cd.Values {
		peak = max(peak, v)
	}
	if peak <= 0 {
		return
	}
	for _, frac := range []float64{0.25, 0.5, 0.75, 1} {
		y := bottom - int(frac*float64(bottom-top-16))
		fill(img, image.Rect(left, y, right, y+1), grid)
	}
	slot := (right - left) / max(len(cd.Values), 1)
	for i, v := range cd.Values {
		h := int(v / peak * float64(bottom-top-16))
		bx := left + i*slot + slot/6
		c, ok := palette[cd.Targets[i]]
		if !ok {
			c = ink
		}
		fill(img, image.Rect(bx, bottom-h, bx+slot*2/3, bottom), c)
		label := human(v)
		text(img, bx+slot/3-textWidth(label, 1)/2, bottom-h-10, label, 1, ink)
		name := cd.Targets[i]
		text(img, left+i*slot+slot/2-textWidth(name, 1)/2, bottom+8, name, 1, ink)
	}
}

// human prints a bar's value short enough to sit above it.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fK", v/1e3)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func textWidth(s string, px int) int { return len(s) * 6 * px }

func text(img *image.RGBA, x, y int, s string, px int, c color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		g, ok := glyphs[r]
		if ok {
			for gy, row := range g {
				for gx, ch := range row {
					if ch == '#' {
						fill(img, image.Rect(x+gx*px, y+gy*px, x+(gx+1)*px, y+(gy+1)*px), c)
					}
				}
			}
		}
		x += 6 * px
	}
}
